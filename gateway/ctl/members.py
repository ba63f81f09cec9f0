"""``gatewayctl members``: the fleet as one region's replica of the members table shows it (DESIGN.md §3).

Each row is a gateway instance with its heartbeat age, the epochs it routes
by, the replication lag it measures from every other region and its buffer
depth; a member whose heartbeat is older than ``members.expiry`` is shown as
stale (it is gone; its item waits for the table's TTL).
"""

from __future__ import annotations

from gateway.ctl import render
from gateway.ctl.session import Session


async def members(session: Session) -> int:
    expiry = session.target.config.members.expiry
    rows = await session.control.members(now_us=session.clock.wall_us(), expiry=expiry)
    if session.args.json:
        session.emit(render.members_json(rows))
    else:
        print(render.members_text(rows, expiry=expiry))
    return 0

