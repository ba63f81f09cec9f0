"""What every ``gatewayctl`` command works with: the target (region, endpoint, config), its control table, and the operator.

``resolve_target`` turns the arguments into a ``Target``: the local cluster's
(``--local``, from ``STATE_DIR/cluster.json``) or an AWS region's
(``--region``, ``--config``). A ``Session`` carries what one command needs:
the parsed arguments, the target, its ``ControlTable``, the clock, and how to
ask the operator.

Invariants: a command prints human text on stdout, or on stderr when stdout
carries ``--json``; every command that changes something (``rules set``,
``rules delete``, ``switch``, ``switch abort``, ``failover``) changes nothing
without ``--yes`` or a "y" typed on a terminal, and without a terminal it
refuses rather than guessing; each of them takes ``--dry-run``, which shows
what it would do and writes nothing. Every refusal is one ``CtlError`` line
(exit status 1) that names what to do next.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from gateway.clock import Clock
from gateway.config import Config, ConfigError
from gateway.config import load as load_config
from gateway.routing.control_table import ControlTable

#: Asks the operator a yes/no question; ``None`` when there is no terminal to ask on.
Confirm = Callable[[str], bool]
#: Opens the store of a target; returns it and the endpoint URL it talks to (for messages).
OpenStore = Callable[["Target"], Awaitable[tuple[Any, str]]]
#: Opens a client of the fleet's peer APIs for a session (``PeerClient``; a fake in tests); the caller closes it.
OpenPeers = Callable[["Session"], Any]


class CtlError(Exception):
    """Why a command failed or refused, as one line for the operator (exit status 1)."""


@dataclass(frozen=True, slots=True)
class Target:
    region: str
    #: ``None``: the AWS regional endpoint, resolved by botocore.
    endpoint_url: str | None
    profile: str | None
    config: Config
    #: Every region's DynamoDB endpoint (``None``: AWS's), for the majority control plane's acceptors.
    endpoints: Mapping[str, str | None] = field(default_factory=dict)
    #: The local cluster's: connect from ``region``'s own loopback address, so its network partitions apply.
    source_address: str | None = None

    def of(self, region: str) -> Target:
        """The same operator and config, aimed at ``region``'s replica."""
        return replace(self, region=region, endpoint_url=self.endpoints.get(region, self.endpoint_url if region ==
                                                                            self.region else None))


def resolve_target(args: argparse.Namespace) -> Target:
    """Region, endpoint, credentials and config from the arguments (and the local cluster's state file)."""
    if not args.local:
        config = _config(args.config, args.region)
        endpoints = {name: r.dynamodb_endpoint for name, r in config.regions.items()}
        return Target(args.region, args.endpoint_url, args.profile, config, {**endpoints, args.region: args.endpoint_url})
    state_file = Path(args.state_dir) / "cluster.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CtlError(f"no running local cluster ({state_file} missing); start one with `make run`") from None
    except (OSError, ValueError) as exc:
        raise CtlError(f"cannot read the local cluster's state {state_file}: {exc}") from None
    regions = state.get("regions") if isinstance(state, dict) else None
    if not isinstance(regions, dict) or not regions:
        raise CtlError(f"{state_file} lists no regions; is the local cluster still starting?")
    region = args.region or next(iter(regions))
    if region not in regions:
        raise CtlError(f"region {region} is not in the local cluster ({', '.join(regions)})")
    info = regions[region]
    if info.get("stopped"):
        raise CtlError(f"region {region} of the local cluster is stopped (fault stop-region); "
                       "start it again or pick another with --region")
    if not info.get("dynamodb"):
        raise CtlError(f"{state_file} names no DynamoDB endpoint for {region}")
    config_path = args.config or state.get("config")
    if not config_path:
        raise CtlError(f"{state_file} names no config file; pass --config")
    beside_state = state_file.resolve().parent.parent / config_path
    if not args.config and not Path(config_path).is_absolute() and beside_state.exists():
        # cluster.json holds the path `local up` was given, relative to where it ran: beside its state directory.
        config_path = str(beside_state)
    from gateway.local.cluster import PEER_SECRET_FILE, use_local_credentials

    use_local_credentials()
    secret_file = state_file.parent / PEER_SECRET_FILE
    if secret_file.exists() and not os.environ.get("FGW_PEER_SECRET"):
        os.environ["FGW_PEER_SECRET"] = secret_file.read_text().strip()  # the cluster's, for switch and failover
    config = _config(config_path, region)
    endpoints = {name: each.get("dynamodb") for name, each in regions.items() if isinstance(each, dict)}
    return Target(region, info["dynamodb"], None, config, endpoints, config.source_address)


def _config(path: str, region: str) -> Config:
    try:
        return load_config(path, region=region)
    except ConfigError as exc:
        raise CtlError(f"bad configuration: {exc}") from None


async def open_target_store(target: Target) -> tuple[Any, str]:
    """The target replica's store: botocore's (profiles, SSO), or, from the local cluster's region address, the
    gateway's own client bound to it (botocore cannot choose the address it connects from)."""
    from botocore.exceptions import BotoCoreError

    from gateway.store.botocore import BotocoreStore

    if target.source_address is not None:
        from gateway.store.lean import open_lean_store

        store = await open_lean_store(target.region, target.endpoint_url, source_address=target.source_address,
                                      attempt_timeout=1.0, max_attempts=2)
        return store, store.endpoint
    try:
        # Few attempts: an operator waiting on an unreachable endpoint wants the error, not a minute of retries.
        store = await BotocoreStore.open(target.region, target.endpoint_url, profile=target.profile, max_attempts=3)
    except BotoCoreError as exc:  # e.g. ProfileNotFound, a malformed endpoint URL
        raise CtlError(f"cannot open a DynamoDB client for {target.region}: {exc}") from None
    return store, target.endpoint_url or store.client.meta.endpoint_url


def default_editor() -> str:
    user = os.environ.get("USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


@dataclass(slots=True)
class Session:
    args: argparse.Namespace
    target: Target
    control: ControlTable
    clock: Clock
    confirm: Confirm | None
    open_peers: OpenPeers

    def say(self, text: str) -> None:
        """Human text: stdout, or stderr when stdout carries JSON."""
        print(text, file=sys.stderr if self.args.json else sys.stdout)

    def emit(self, body: Any) -> None:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())

    async def confirmed(self) -> bool:
        """Whether to apply: ``--yes``, or a "y" on the terminal; ``False`` for ``--dry-run`` (said so)."""
        if getattr(self.args, "dry_run", False):
            self.say("dry run: nothing was written (without --dry-run, this applies)")
            return False
        if self.args.yes:
            return True
        if self.confirm is None:
            raise CtlError("stdin is not a terminal to confirm on: nothing was written; pass --yes to apply without "
                           "asking (or --dry-run to see what it would do)")
        if await asyncio.to_thread(self.confirm, "apply? [y/N] "):
            return True
        self.say("nothing was written")
        return False
