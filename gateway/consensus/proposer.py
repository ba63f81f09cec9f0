"""The proposer of the majority control plane: changes one scope's rule register with a majority of the regions.

``Proposer.change(scope, change)`` runs the two phases of gateway/consensus/ballots.py against every region's
acceptor at once (each region's DynamoDB replica, gateway/consensus/acceptor.py): prepare with a fresh ballot;
with a majority of promises, apply ``change`` to the register's current value; accept the result with the same
ballot; once a majority accepted, the change is decided and ``change`` returns a ``Decision`` that says which
regions accepted it and which did not answer. A region that does not answer within ``timeout`` (cut off,
stopped) simply did not promise or accept: a change needs only a majority, so it is made while any minority of
the regions, the one that used to be the control region included, is unreachable.

A ballot beaten by another proposer's is tried again with a higher one, a few times with a short random pause
(two proposers that keep beating each other stop after ``attempts``). ``change`` may raise, e.g. when the
current value is not the one the operator's edit was planned from: then nothing is accepted in this round.

Invariants:
- ``change`` returns only a value a majority of the regions accepted at one ballot: a decided value.
- ``NotDecided`` is raised in every other case, naming what each region answered; what a minority accepted is
  reported as possibly taking effect later (a later proposer may find it current), never as refused.
- A value this proposer got accepted by a minority and finds again as current in its next round is proposed
  again as it is, not changed a second time (a retry must not apply an edit twice).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError

from gateway.clock import Clock
from gateway.consensus.acceptor import Acceptor, Answer
from gateway.consensus.ballots import Value, ballot, chosen, counter_of
from gateway.errors import GatewayError
from gateway.routing.rules import Rule

log = logging.getLogger(__name__)

#: Seconds a phase waits for a majority (a cold client's first calls can take seconds); once a majority
#: answered, the rest get only ``GRACE``: a region cut off does not hold a change up for this long.
TIMEOUT = 5.0
#: Rounds before two proposers that keep beating each other's ballots give up.
ATTEMPTS = 4


class NotDecided(Exception):
    """No majority of the regions promised or accepted; the message says what each region answered."""

    def __init__(self, message: str, accepted: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.accepted = accepted


@dataclass(frozen=True, slots=True)
class Decision:
    """A decided change: the register's new value, and how each region answered the accept."""

    value: Value
    ballot: str
    accepted: tuple[str, ...]
    #: Regions that answered no (a higher ballot), and those that did not answer, with why.
    refused: tuple[str, ...] = ()
    unreachable: dict[str, str] = field(default_factory=dict)

    def summary(self, regions: int) -> str:
        """``accepted by eu-west-1, ap-southeast-1 (2 of 3 regions); no answer from us-east-1``"""
        text = f"accepted by {', '.join(self.accepted)} ({len(self.accepted)} of {regions} regions)"
        if self.refused:
            text += f"; refused by {', '.join(self.refused)}"
        if self.unreachable:
            text += "; no answer from " + ", ".join(f"{r} ({why})" for r, why in sorted(self.unreachable.items()))
        return text


Change = Callable[[Value | None], Value]

#: Seconds the regions still silent get once a majority has answered yes, before they count as not answering.
GRACE = 0.1


async def gather_until(
    calls: Mapping[str, Awaitable[Any]], enough: Callable[[dict[str, Any]], bool], timeout: float, grace: float = GRACE,
) -> dict[str, Any]:
    """Each call's result by name, or why there is none ("no answer in 2s"): all are awaited at once, until every
    one is done, ``timeout`` passes, or ``grace`` has passed since the results in hand were ``enough``.
    The calls still running then are cancelled."""
    tasks = {asyncio.ensure_future(call): name for name, call in calls.items()}
    done: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    pending = set(tasks)
    try:
        while pending:
            left = deadline - loop.time()
            if left <= 0:
                break
            finished, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                done[tasks[task]] = task.result()
            if pending and enough(done):
                deadline = min(deadline, loop.time() + grace)
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    waited = loop.time() - started
    for task in pending:
        done[tasks[task]] = f"no answer in {waited:.1f}s"
    return {name: done[name] for name in calls}


class Proposer:
    def __init__(
        self,
        acceptors: Mapping[str, Acceptor],
        clock: Clock,
        proposer: str,
        *,
        timeout: float = TIMEOUT,
        attempts: int = ATTEMPTS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """``acceptors``: every region's, the fleet's whole list (a majority is counted of it); ``proposer``
        names this proposer in its ballots (unique: a host and process, say)."""
        assert acceptors and attempts > 0
        self.acceptors = dict(acceptors)
        self.majority = len(self.acceptors) // 2 + 1
        self._clock = clock
        self._id = proposer.replace("/", "_")
        self._timeout = timeout
        self._attempts = attempts
        self._sleep = sleep
        self._jitter = jitter
        self._counter = 0

    def _ballot(self) -> str:
        self._counter = max(self._counter + 1, self._clock.wall_ms())
        return ballot(self._counter, self._id)

    def _saw(self, answers: Mapping[str, Answer | str]) -> bool:
        """Raise the counter past every ballot an answer shows; whether some region had promised a higher one."""
        beaten = False
        for answer in answers.values():
            if isinstance(answer, Answer):
                seen = max(counter_of(answer.slot.promised), counter_of(answer.slot.accepted))
                self._counter = max(self._counter, seen)
                beaten = beaten or not answer.ok
        return beaten

    async def _ask(self, call: Callable[[Acceptor], Awaitable[Answer]]) -> dict[str, Answer | str]:
        """Every region's answer, or why it gave none: within ``timeout``, and no more than ``GRACE`` after a
        majority said yes (a region cut off must not hold every change up for the whole timeout)."""

        async def one(acceptor: Acceptor) -> Answer | str:
            try:
                return await call(acceptor)
            except GatewayError as exc:
                return exc.message
            except (BotoCoreError, OSError) as exc:
                return str(exc)

        majority = self.majority
        return await gather_until(
            {r: one(a) for r, a in self.acceptors.items()},
            lambda done: sum(1 for a in done.values() if isinstance(a, Answer) and a.ok) >= majority,
            self._timeout,
        )

    async def warm(self) -> None:
        """Open every region's connection before the first change is timed (a cold DynamoDB client's first call can
        take a second): one read of each region's replica, done once a majority answered, errors ignored."""

        async def one(acceptor: Acceptor) -> bool:
            try:
                await acceptor.slot("")
            except (GatewayError, BotoCoreError, OSError):
                return False
            return True

        majority = self.majority
        await gather_until({r: one(a) for r, a in self.acceptors.items()},
                           lambda done: sum(1 for ok in done.values() if ok is True) >= majority, self._timeout)

    async def change(self, scope: str, change: Change) -> Decision:
        proposed: Value | None = None
        accepted_by: tuple[str, ...] = ()
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(0.05 + 0.2 * self._jitter())  # let the other proposer's round finish
            b = self._ballot()
            promises = await self._ask(lambda a: a.prepare(scope, b))
            beaten = self._saw(promises)
            promised = {r: a for r, a in promises.items() if isinstance(a, Answer) and a.ok}
            if len(promised) < self.majority:
                if beaten:
                    continue
                raise NotDecided(self._no_majority(scope, "promised", promised, promises, accepted_by), accepted_by)
            current = _current(chosen(a.slot for a in promised.values()), (a.replica for a in promised.values()))
            new = current if proposed is not None and current == proposed else change(current)
            proposed = new
            accepts = await self._ask(lambda a: a.accept(scope, b, new))
            beaten = self._saw(accepts)
            accepted_by = tuple(r for r, a in accepts.items() if isinstance(a, Answer) and a.ok)
            if len(accepted_by) >= self.majority:
                return Decision(
                    new, b, accepted_by,
                    refused=tuple(r for r, a in accepts.items() if isinstance(a, Answer) and not a.ok),
                    unreachable={r: a for r, a in accepts.items() if isinstance(a, str)},
                )
            if not beaten:
                raise NotDecided(self._no_majority(scope, "accepted", dict.fromkeys(accepted_by), accepts, accepted_by),
                                 accepted_by)
        raise NotDecided(
            f"the change of {scope} was not decided: other changes of it kept taking precedence ({self._attempts} "
            "rounds); see what holds now and try again", accepted_by,
        )

    def _no_majority(self, scope: str, did: str, ok: Mapping[str, object], answers: Mapping[str, Answer | str],
                     accepted_by: tuple[str, ...]) -> str:
        parts = [f"{did}: {', '.join(ok) or 'none'}"]
        silent = {r: a for r, a in answers.items() if isinstance(a, str)}
        if silent:
            parts.append("no answer from " + ", ".join(f"{r} ({why})" for r, why in silent.items()))
        text = (f"no majority of the regions answered for {scope} ({len(ok)} of {len(self.acceptors)}, "
                f"{self.majority} needed; {'; '.join(parts)}): nothing was decided; run it again from a region that "
                "reaches a majority of the others, or once they are reachable")
        if accepted_by:
            text += (f"; what {', '.join(accepted_by)} accepted may still take effect if a later change finds it, "
                     "so read the rule before editing again")
        return text


def _version(value: Value | None) -> int:
    return -1 if value is None else value.version


def _current(accepted: Value | None, replicas: Iterable[Rule | None]) -> Value | None:
    """The register's value: what the majority's promises show accepted, unless a replica holds a later rule.

    A later rule item than any accepted value was written outside the control plane (seeded, or by a
    ``gatewayctl`` of before it): it is the newest intent, and the change builds on it. Versions of a scope
    never repeat (a rule made again after a delete continues from the deleted one's), so a replica that has
    not yet seen a decided change or deletion never looks later than it.
    """
    current = accepted
    for rule in replicas:
        if rule is not None and rule.version > _version(current):
            current = rule
    return current
