"""mTLS between peer gateways (``peer.tls_cert``/``tls_key``/``tls_ca``): both sides' ``ssl.SSLContext``.

Invariant: with mTLS configured, the peer listener refuses a connection whose
certificate is not signed by the configured CA, and a client trusts only that
CA. Peers are reached by address, so host names on certificates are not
checked: the private CA is the trust.
"""

from __future__ import annotations

import ssl

from gateway.config import Config


def tls_context(config: Config, *, server: bool = False) -> ssl.SSLContext | None:
    """mTLS between peers (``None`` when not configured): the client side, or the peer listener's side."""
    peer = config.peer
    if not peer.tls_cert:
        return None
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    context = ssl.create_default_context(purpose, cafile=peer.tls_ca)
    context.load_cert_chain(peer.tls_cert, peer.tls_key)
    if server:
        context.verify_mode = ssl.CERT_REQUIRED  # a peer must present a certificate of our CA
    else:
        # Peers are reached by address, not by a name on their certificate; the private CA is the trust.
        context.check_hostname = False
    return context
