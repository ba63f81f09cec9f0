"""The peer API's routes, in one place: the client (gateway/peer/client.py) and the listener (gateway/api/peer.py) both import them.

Every route is ``POST`` with a JSON body, on the peer listener only, and every
request is signed (gateway/peer/auth.py); what each carries and answers is in
gateway/api/peer.py's docstring.
"""

#: Forwarded writes and strong reads (DESIGN.md §6).
WRITE_PATH = "/internal/v1/write"
READ_PATH = "/internal/v1/read"
#: The switch protocol's routes (gateway/switch/coordinator.py calls them; gateway/switch/participant.py answers).
RULES_PATH = "/internal/v1/rules"
ROUTING_PATH = "/internal/v1/routing"
FENCE_PATH = "/internal/v1/fence"
VERSIONS_PATH = "/internal/v1/versions"
BUFFER_PATH = "/internal/v1/buffer"
#: Primacy leases: a primary region's gateway asks another region to confirm its lease (gateway/lease/keeper.py).
LEASE_PATH = "/internal/v1/lease"
