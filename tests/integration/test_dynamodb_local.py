"""DynamoDB Local as the tests and the local cluster run it (gateway/local/dynamodb_local.py): only this machine
reaches it. DynamoDB Local has no option for its address and binds every interface; the launcher binds it to
loopback. Checked from the kernel's table of listening sockets, so the test sends nothing anywhere."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

LISTEN = "0A"


def listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses on which some socket of this machine listens on TCP ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] != LISTEN or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(ipaddress.ip_address(socket.inet_ntop(family, packed)))
    return found


def loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def test_dynamodb_local_listens_on_loopback_only(dynamodb_local):
    addresses = listening_addresses(dynamodb_local.port)
    assert addresses, f"nothing listens on port {dynamodb_local.port}"
    assert all(loopback(a) for a in addresses), addresses
    assert dynamodb_local.ping()
