"""Gateway configuration: frozen dataclasses loaded from TOML, overridable by ``FGW_…`` environment variables.

Invariant: a ``Config`` that exists is valid. ``load()`` is the only way to make
one from a file; it applies environment overrides, then reads every section
generically from its dataclass's fields (each default is written once, on its
field; each field's type and checks say what it accepts), then
``Config.validate()`` checks what spans fields (each section's ``validate()``).
Every problem raises ``ConfigError`` naming the file and the dotted key, so a
bad config stops the process at start with one clear line.

Environment overrides use the dotted key with ``__`` between segments, upper
case, ``-`` written as ``_``: ``FGW_GATEWAY__WORKERS=4``,
``FGW_DYNAMODB__ENDPOINT_URL=http://127.0.0.1:8600``,
``FGW_VIEWS__USERS__TABLE=prod_users``. A value is read as a TOML value when
it parses as one (``4``, ``true``, ``1.5``, ``["a"]``) and as a plain string
otherwise.

One file can describe several regions (``[regions.NAME]``, as
``config/local.toml`` does for the local cluster); ``gateway.region`` (or
``serve --region``) selects which one this process is, and that region's
``downstream``/``peer``/``dynamodb_endpoint`` fill in the listen addresses
and the DynamoDB endpoint when the file does not set them.

How a field is read, from its type: ``float`` takes a TOML integer or float,
``int`` an integer (a ``true`` is never a number), ``str | None`` a string
(empty means ``None``), ``Address`` a ``HOST:PORT`` string. Its checks
(``setting(default, *checks)``) say what else it must be.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

ENV_PREFIX = "FGW_"

#: Feature types a view may declare. ``float`` accepts integers too (a float feature may hold 3).
FEATURE_TYPES = frozenset({"string", "int", "float", "bool", "list", "map", "any"})

#: An AWS region name such as us-east-1 (the config's regions and every region a rule names).
REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
#: A view name, and the characters of a DynamoDB table name (a table name also needs 3 or more).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")

#: Longest feature name, in UTF-8 bytes (DynamoDB's limit for key attribute names; feature stores use short names).
MAX_FEATURE_NAME_BYTES = 255

#: Shortest peer secret accepted, in bytes.
MIN_SECRET_BYTES = 16


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


# -- how a setting is declared and checked -----------------------------------------------------

#: A check of one value given in the file (never of a default, never of an empty ``None``): the problem as the end
#: of a sentence ("must be ..."), or ``None`` when it is fine.
Check = Callable[[Any], str | None]


def setting(default: Any = dataclasses.MISSING, *checks: Check) -> Any:
    """A field read from TOML, with its one default and the checks a value given for it must pass."""
    return field(default=default, metadata={"checks": checks})


def internal(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """A field that is not a TOML key of its table (filled in by ``load``, or read specially)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"internal": True})
    return field(default=default, metadata={"internal": True})


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value!r}"


def not_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value!r}"


def fraction(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else f"must be from 0.0 to 1.0, got {value!r}"


def at_most(limit: float, why: str = "") -> Check:
    def check(value: Any) -> str | None:
        return None if value <= limit else f"must be at most {limit:g}{why}, got {value!r}"

    return check


def one_of(*choices: str) -> Check:
    names = ", ".join(f"{c!r}" for c in choices[:-1]) + f" or {choices[-1]!r}"

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be {names}, got {value!r}"

    return check


def http_url(value: Any) -> str | None:
    if value.startswith(("http://", "https://")):
        return None
    return f"must start with http:// or https://, got {value!r}"


def region_name(value: Any) -> str | None:
    if REGION_PATTERN.match(value):
        return None
    return f"is not a region name like us-east-1, got {value!r}"


def ip_address(value: Any) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"is not an IP address, got {value!r}"
    return None


def host_port(value: Any) -> str | None:
    """For a string field that must name an address (kept as written, e.g. ``peer.advertise``)."""
    return None if _address(value) is not None else _ADDRESS_PROBLEM.format(value)


# -- the settings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


_ADDRESS_PROBLEM = "must be HOST:PORT with a port from 1 to 65535, got {!r}"


def _address(text: str) -> Address | None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return Address(host, int(port))


@dataclass(frozen=True, slots=True)
class ViewConfig:
    """``[views.NAME]``: a feature view and its table (DESIGN.md §1, §3)."""

    name: str = internal()
    table: str = setting()
    key_attribute: str = setting("pk")
    #: Declared features and their types; ``None`` means the view accepts any feature name.
    features: Mapping[str, str] | None = setting(None)

    def validate(self, fail: Callable[[str, str], ConfigError]) -> None:
        if not NAME_PATTERN.match(self.name):
            raise fail("", "view names may hold letters, digits, '_', '-' and '.' only")
        if not NAME_PATTERN.match(self.table) or len(self.table) < 3:
            raise fail("table", f"is not a valid DynamoDB table name, got {self.table!r}")
        for feature, kind in (self.features or {}).items():
            if kind not in FEATURE_TYPES:
                raise fail(f"features.{feature}", f"type must be one of {', '.join(sorted(FEATURE_TYPES))}, got {kind!r}")
            if feature.startswith("_") or feature == self.key_attribute:
                raise fail(f"features.{feature}", "feature names may not start with '_' or equal the key attribute")
            if len(feature.encode()) > MAX_FEATURE_NAME_BYTES:
                raise fail(f"features.{feature[:32]}...", f"feature names hold at most {MAX_FEATURE_NAME_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class RegionConfig:
    """``[regions.NAME]``: where a region's gateways and DynamoDB are reached."""

    name: str = internal()
    downstream: Address = setting()
    peer: Address = setting()
    dynamodb_endpoint: str | None = setting(None, http_url)
    #: The admin listener of this region's gateways (``gateway.admin_listen``, when not set there).
    admin: Address | None = setting(None)
    #: The local address this region's gateways connect from (``gateway.source_address``, when not set there).
    source_address: str | None = setting(None, ip_address)
    #: A witness region: gateways and a control-table replica that count in every majority (leases, rule
    #: changes) but take no feature traffic, so no rule may make it a primary. A two-region fleet with a witness
    #: keeps taking writes while any one of the three is cut off.
    witness: bool = setting(False)


@dataclass(frozen=True, slots=True)
class DynamoDBConfig:
    #: Empty means the region's ``dynamodb_endpoint``, else the AWS regional endpoint, resolved by botocore.
    endpoint_url: str | None = setting(None, http_url)
    attempt_timeout: float = setting(2.0, positive)
    max_attempts: int = setting(6, positive)
    #: "http1" (gateway/http1/, lean keep-alive pool) or "aiohttp" (one shared ClientSession).
    wire: str = setting("http1", one_of("http1", "aiohttp"))


@dataclass(frozen=True, slots=True)
class MembersConfig:
    """The members table: each gateway's heartbeat, the fleet view and the replication canary."""

    table: str = setting("feature_gateway_members")
    #: Seconds between heartbeats of this instance's member item.
    heartbeat_interval: float = setting(1.0, positive)
    #: Seconds between reads of the local replica's members (the lag is measured at this resolution).
    observe_interval: float = setting(1.0, positive)
    #: A member whose heartbeat is older than this is gone (also the item's TTL).
    expiry: float = setting(30.0, positive)

    def validate(self, fail: Callable[[str, str], ConfigError]) -> None:
        if self.expiry <= 2 * self.heartbeat_interval:
            raise fail("expiry", f"must be more than twice heartbeat_interval ({self.heartbeat_interval:g}s)")


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Routing rules (DESIGN.md §5): where they live, how fresh they are kept, how writes are re-routed."""

    table: str = setting("feature_gateway_routing")
    #: Seconds between reads of the local control-table replica (a ``not_primary`` answer also refreshes at once).
    poll_interval: float = setting(1.0, positive, at_most(1.0, " second (DESIGN.md §5)"))
    #: Routing attempts of one write: the first, plus re-routes after a ``not_primary`` answer.
    max_attempts: int = setting(3, positive)
    #: Seconds a ``min_version`` read waits for the local replica before reading from the primary.
    min_version_wait: float = setting(0.5, positive)
    #: Seconds a primacy lease lasts (gateway/lease/): a primary region's gateways acknowledge a single-primary
    #: scope's writes only while a majority of the regions confirmed, within the last lease, that it is the
    #: primary; cut off from them, it stops within a lease. Longer than the slowest round trip between regions.
    lease: float = setting(3.0, positive)
    #: The most two gateways' clocks may disagree, seconds (NTP keeps them within milliseconds; this is the
    #: bound the leases' safety rests on). Less than half the lease.
    max_drift: float = setting(0.5, positive)

    def validate(self, fail: Callable[[str, str], ConfigError]) -> None:
        if not self.lease > 2 * self.max_drift:
            raise fail("lease", f"must be more than twice routing.max_drift ({self.max_drift:g} s), got {self.lease:g}")


@dataclass(frozen=True, slots=True)
class BufferConfig:
    """The write buffer (DESIGN.md §7.5): writes held while their scope switches primary, per worker process."""

    #: Longest hold of one write, seconds; then 503 primary_switching.
    window: float = setting(10.0, positive)
    #: Most writes held at once (all scopes); beyond it 503 primary_switching at once.
    max_entries: int = setting(10_000, positive)
    #: Most bytes of held writes (their records' size); beyond it 503 primary_switching at once.
    max_bytes: int = setting(64 << 20, positive)
    #: Held writes sent on to the new primary at once when a switch ends.
    drain_concurrency: int = setting(64, positive)


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    """Planned switches and failovers (DESIGN.md §7)."""

    #: Seconds a switch may take before it is aborted (the old primary stays, epoch + 1).
    max_duration: float = setting(5.0, positive)
    #: Preflight: the new primary's replication lag from the old one must be under this, seconds.
    max_replication_lag: float = setting(2.0, positive)
    #: Anti-flap: seconds between two switches of one scope (unless forced).
    min_interval: float = setting(60.0, positive)
    #: Seconds an old primary keeps acknowledged keys for the fence.
    fence_window: float = setting(300.0, positive)
    #: Most acknowledged keys kept per scope for the fence; past it the fence cannot be verified (abort).
    fence_max_keys: int = setting(100_000, positive)
    #: Schedules: seconds a coordinator lease lasts, and between the holder's checks.
    lease_seconds: float = setting(10.0, positive)
    schedule_interval: float = setting(1.0, positive)
    #: No longer used: rule changes are decided by a majority of the regions (gateway/consensus/), and each
    #: region's scheduler keeps its lease in its own replica. Kept so that configs which name it still load.
    control_region: str | None = setting(None, region_name)


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """The peer API between gateways: HMAC-signed requests on their own listener."""

    #: Environment variable holding the shared secret (used when ``secret_file`` is empty).
    secret_env: str = setting("FGW_PEER_SECRET")
    secret_file: str | None = setting(None)
    #: Accepted difference between a signed request's timestamp and this gateway's clock, in seconds.
    max_skew: float = setting(30.0, positive)
    #: Signed peer requests the gateway remembers against replay (one table shared by its workers), each for up
    #: to 2 x ``max_skew`` seconds: room for 4 300 requests a second at the defaults, in 16 x 4 x this bytes.
    max_nonces: int = setting(262_144, positive)
    #: Seconds one forward attempt to one peer instance may take.
    timeout: float = setting(2.0, positive)
    #: Keep-alive connections per peer address.
    pool_size: int = setting(64, positive)
    #: Peer requests one worker serves at once (its own bound: peers can never take the downstream's slots);
    #: beyond it 503 ``overloaded`` at once, and the sender tries the region's next instance.
    max_concurrent_requests: int = setting(1024, positive)
    #: Open connections on the peer listener per worker; past it a new one is answered 503 and closed.
    max_connections: int = setting(512, positive)
    #: Address other gateways use to reach this one's peer API (default: the peer listen address).
    advertise: str | None = setting(None, host_port)
    #: mTLS (optional): this gateway's certificate and key, and the CA that signed its peers'.
    tls_cert: str | None = setting(None)
    tls_key: str | None = setting(None)
    tls_ca: str | None = setting(None)
    #: Outlier detection per peer address (gateway/peer/outlier_detection.py, after Envoy's): this many
    #: consecutive failures (no answer, or 503 draining/overloaded) eject the address ...
    outlier_consecutive_failures: int = setting(5, positive)
    #: ... for this many seconds times the number of times it was ejected, at most ``outlier_max_ejection``;
    #: after that one probe request is let through, and its success makes the address healthy again.
    outlier_base_ejection: float = setting(5.0, positive)
    outlier_max_ejection: float = setting(300.0, positive)
    #: Most addresses of one region ejected at once, in percent (at least one may always be).
    outlier_max_ejection_percent: int = setting(50, positive, at_most(100))
    #: The secret itself, read by ``load()`` from the file or the environment; never printed.
    secret: bytes = internal(b"")

    def validate(self, fail: Callable[[str, str], ConfigError]) -> None:
        if self.outlier_max_ejection < self.outlier_base_ejection:
            raise fail("outlier_max_ejection", "must be at least outlier_base_ejection")
        if bool(self.tls_cert) != bool(self.tls_key) or (self.tls_cert and not self.tls_ca):
            raise fail("tls_cert", "mTLS needs tls_cert, tls_key and tls_ca together")


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry spans (gateway/obs/tracing.py): none, printed to stdout, or sent over OTLP/HTTP."""

    #: "none" (no span is ever created), "console" or "otlp".
    exporter: str = setting("none", one_of("none", "console", "otlp"))
    #: OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces (empty: the exporter's default).
    endpoint: str | None = setting(None, http_url)
    #: Fraction of traces started here that are recorded; a request arriving with a sampled parent always is.
    sample_ratio: float = setting(1.0, fraction)


@dataclass(frozen=True, slots=True)
class LogsConfig:
    #: Fraction of requests written to the access log; answers of 5xx are always written.
    access_sample: float = setting(0.01, fraction)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Authentication of downstream callers: bearer tokens mapped to the views they may read and write."""

    #: "tokens" (every /v1/ request needs a bearer token of ``tokens_file``) or "off". Unset: off when
    #: ``gateway.listen`` is a loopback address (a sidecar), and a config error otherwise: a gateway others
    #: can reach must be told which.
    mode: str | None = setting(None, one_of("tokens", "off"))
    #: TOML file of the callers: each token's SHA-256 and the views it may read and write (gateway/api/auth.py);
    #: re-read within a second of a change.
    tokens_file: str | None = setting(None)

    def validate(self, fail: Callable[[str, str], ConfigError]) -> None:
        if self.mode == "tokens" and not self.tokens_file:
            raise fail("tokens_file", 'is required with mode = "tokens"')


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """``[local]``: read by ``feature-gateway local up`` only (gateways ignore it), so one file describes the cluster."""

    #: Where the cluster serves its control endpoint (faults, ``local status``, ``local down``) and the status
    #: page of all its regions; default: a free port on 127.0.0.1, named in the state directory's cluster.json.
    control_listen: Address | None = setting(None)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a listen address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: The sections of the file beside ``[gateway]``, ``[views.*]`` and ``[regions.*]``, as ``Config`` field names.
_SECTIONS = ("dynamodb", "members", "routing", "peer", "tracing", "logs", "buffer", "switch", "auth", "local")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; the fields before ``dynamodb`` are the ``[gateway]`` table."""

    region: str = setting(dataclasses.MISSING, region_name)
    #: The downstream listener (default: this region's ``downstream`` in ``[regions.*]``, else 127.0.0.1:8700).
    listen: Address = setting(Address("127.0.0.1", 8700))
    #: The peer listener (default: this region's ``peer`` in ``[regions.*]``, else 0.0.0.0:8701).
    peer_listen: Address = setting(Address("0.0.0.0", 8701))
    #: An optional third listener with only /healthz, /readyz and /metrics, for a sidecar whose downstream
    #: port is on loopback (kubelet probes and Prometheus scrapes come from outside the pod's loopback).
    admin_listen: Address | None = setting(None)
    workers: int = setting(1, positive)
    #: Largest request body read; larger bodies get 413 even when Content-Length lies.
    max_body_bytes: int = setting(1 << 20, positive)
    #: Deadline of one downstream request, including DynamoDB retries.
    request_timeout: float = setting(5.0, positive)
    #: Seconds SIGTERM waits for in-flight requests before the process exits.
    shutdown_grace: float = setting(10.0, positive)
    #: Seconds after SIGTERM with readiness false while requests are still served, so load balancers move traffic.
    drain_seconds: float = setting(5.0, not_negative)
    #: Downstream requests one worker serves at once (/healthz, /readyz and /metrics not counted; the peer
    #: listener has its own bound, ``peer.max_concurrent_requests``); beyond it 503 ``overloaded`` at once.
    max_concurrent_requests: int = setting(1024, positive)
    #: Seconds a connection may go without a complete request head, after it opened or after its last answer
    #: (idle keep-alives, silent clients, headers sent a byte at a time); then it is closed. Above the 60 s
    #: idle timeout of AWS load balancers, so they close first and never reuse a connection being closed.
    idle_timeout: float = setting(75.0, positive)
    #: Open connections on the downstream (and admin) listener per worker; past it a new one is answered 503
    #: ``overloaded`` and closed (the peer listener has ``peer.max_connections``).
    max_connections: int = setting(4096, positive)
    #: The local IP address outgoing connections (to DynamoDB and to peers) are made from, like Envoy's
    #: upstream bind config; default: the kernel's choice (or this region's ``source_address``).
    source_address: str | None = setting(None, ip_address)
    #: Most DynamoDB read calls outstanding per table and consistency per worker (lanes of the coalescer).
    read_max_in_flight: int = setting(4, positive)
    #: Seconds every open lane must have waited before another opens; until then reads ride the next batch.
    read_lane_after: float = setting(0.002, positive)
    dynamodb: DynamoDBConfig = internal(factory=DynamoDBConfig)
    members: MembersConfig = internal(factory=MembersConfig)
    routing: RoutingConfig = internal(factory=RoutingConfig)
    peer: PeerConfig = internal(factory=PeerConfig)
    tracing: TracingConfig = internal(factory=TracingConfig)
    logs: LogsConfig = internal(factory=LogsConfig)
    buffer: BufferConfig = internal(factory=BufferConfig)
    switch: SwitchConfig = internal(factory=SwitchConfig)
    auth: AuthConfig = internal(factory=AuthConfig)
    local: LocalConfig = internal(factory=LocalConfig)
    views: Mapping[str, ViewConfig] = internal(factory=dict)
    regions: Mapping[str, RegionConfig] = internal(factory=dict)
    #: The file this was loaded from, for messages.
    source: str = internal("<defaults>")

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {problem}")

    @property
    def primary_regions(self) -> list[str]:
        """The regions a rule may make primary: every region of the file but its witnesses."""
        return [name for name, region in self.regions.items() if not region.witness]

    def validate(self) -> Config:
        """What spans settings (each section's ``validate()`` included); the first problem raises ``ConfigError``."""

        def under(prefix: str) -> Callable[[str, str], ConfigError]:
            return lambda key, problem: self.fail(f"{prefix}{key}".rstrip("."), problem)

        if self.regions and not self.primary_regions:
            raise self.fail("regions", "every region is a witness (witness = true); at least one must take feature traffic")
        if self.regions and self.region not in self.regions:
            raise self.fail(
                "gateway.region", f"{self.region!r} is not one of the regions this file defines: {', '.join(sorted(self.regions))}"
            )
        if not self.views:
            raise self.fail("views", "at least one view must be configured")
        for name, view in self.views.items():
            view.validate(under(f"views.{name}."))
        for name in _SECTIONS:
            section = getattr(self, name)
            if hasattr(section, "validate"):  # sections whose settings constrain each other
                section.validate(under(f"{name}."))
        control = self.switch.control_region
        if control and self.regions and control not in self.regions:
            raise self.fail("switch.control_region", f"{control!r} is not one of the regions: {', '.join(self.regions)}")
        if self.auth.mode is None and not is_loopback(self.listen.host):
            raise self.fail(
                "auth.mode",
                f"gateway.listen {self.listen} is reachable from other machines: set auth.mode = \"tokens\" (with "
                "auth.tokens_file) to authenticate callers, or auth.mode = \"off\" to serve anyone who reaches it",
            )
        if self.admin_listen is not None and self.admin_listen.port in (self.listen.port, self.peer_listen.port):
            # SO_REUSEPORT would let two listeners share the port and split its connections between them.
            raise self.fail(
                "gateway.admin_listen", f"must use a port of its own, not that of listen or peer_listen ({self.admin_listen})"
            )
        return self


# -- loading -----------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], *, region: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate. Raises ``ConfigError``."""
    source = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    apply_env_overrides(raw, os.environ if env is None else env, source)
    if region is not None:
        raw.setdefault("gateway", {})["region"] = region
    config = from_dict(raw, source)
    return replace(config, peer=replace(config.peer, secret=_peer_secret(config, os.environ if env is None else env)))


def _peer_secret(config: Config, env: Mapping[str, str]) -> bytes:
    """The shared peer secret from ``peer.secret_file`` or the environment; empty when neither has one."""
    peer = config.peer
    if peer.secret_file:
        try:
            secret = Path(peer.secret_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{config.source}: peer.secret_file: cannot read {peer.secret_file}: {exc}") from None
        where = f"peer.secret_file ({peer.secret_file})"
    else:
        secret = env.get(peer.secret_env, "").strip().encode()
        where = f"environment variable {peer.secret_env}"
    if secret and len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{config.source}: the peer secret in {where} is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def require_peer_secret(config: Config) -> None:
    """A serving gateway needs the secret: without it, it could neither forward nor accept forwarded writes."""
    if not config.peer.secret:
        where = f"peer.secret_file ({config.peer.secret_file})" if config.peer.secret_file else (
            f"the environment variable {config.peer.secret_env}"
        )
        raise ConfigError(f"{config.source}: no peer secret: set {where} to a shared secret of {MIN_SECRET_BYTES}+ bytes")


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str], source: str) -> None:
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        segments = name[len(ENV_PREFIX):].split("__")
        node = raw
        for i, segment in enumerate(segments):
            wanted = segment.lower().replace("-", "_")
            match = next((k for k in node if k.lower().replace("-", "_") == wanted), wanted)
            if i == len(segments) - 1:
                node[match] = _env_value(text)
            else:
                child = node.setdefault(match, {})
                if not isinstance(child, dict):
                    raise ConfigError(f"{source}: environment variable {name} addresses inside {match!r}, which is not a table")
                node = child


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a ``Config`` from parsed TOML."""
    top = _table(raw, "", source)
    _known(top, ("gateway", "views", "regions", *_SECTIONS), "", source)
    regions = {
        name: read(RegionConfig, _region_table(name, table, source), f"regions.{name}.", source, name=name)
        for name, table in _table(top.get("regions", {}), "regions", source).items()
    }
    views = {
        name: read(ViewConfig, _table(table, f"views.{name}", source), f"views.{name}.", source, name=name)
        for name, table in _table(top.get("views", {}), "views", source).items()
    }
    gateway = _table(top.get("gateway", {}), "gateway", source)
    kinds = typing.get_type_hints(Config)  # each section's dataclass, by its name in Config and in the file
    sections = {name: read(kinds[name], _table(top.get(name, {}), name, source), f"{name}.", source) for name in _SECTIONS}
    # The region's own entry in [regions.*] fills in what the file leaves unset.
    own = regions.get(gateway.get("region")) if isinstance(gateway.get("region"), str) else None
    if own is not None:
        gateway = {"listen": str(own.downstream), "peer_listen": str(own.peer), **gateway}
        if own.source_address:
            gateway = {"source_address": own.source_address, **gateway}
        if own.admin is not None:
            gateway = {"admin_listen": str(own.admin), **gateway}
        if own.dynamodb_endpoint and not sections["dynamodb"].endpoint_url:
            sections["dynamodb"] = replace(sections["dynamodb"], endpoint_url=own.dynamodb_endpoint)
    config = read(
        Config, gateway, "gateway.", source,
        views=MappingProxyType(views), regions=MappingProxyType(regions), source=source, **sections,
    )
    return config.validate()


def read(kind: type, table: Mapping[str, Any], prefix: str, source: str, /, **given: Any) -> Any:
    """A ``kind`` dataclass from one TOML table, each field by its type and checks; ``given`` fills internal ones.

    Unknown keys, values of the wrong type and failed checks raise ``ConfigError`` naming
    ``prefix`` + key and the file.
    """
    hints = typing.get_type_hints(kind)
    values: dict[str, Any] = dict(given)
    settings = [each for each in dataclasses.fields(kind) if not each.metadata.get("internal")]

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {prefix}{key}: {problem}")

    _known(table, [each.name for each in settings], prefix, source)
    for declared in settings:
        if declared.name not in table:
            if declared.default is dataclasses.MISSING and declared.default_factory is dataclasses.MISSING:
                raise fail(declared.name, "is required")
            continue
        value = _convert(hints[declared.name], table[declared.name], lambda problem, key=declared.name: fail(key, problem))
        if value is not None:
            for check in declared.metadata.get("checks", ()):
                problem = check(value)
                if problem is not None:
                    raise fail(declared.name, problem)
        values[declared.name] = value
    return kind(**values)


def _convert(hint: Any, value: Any, fail: Callable[[str], ConfigError]) -> Any:
    """``value`` as the field type ``hint`` wants it; ``str | None`` reads "" as ``None``."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = len(args) < len(typing.get_args(hint)), args[0]
    if hint is float:
        kinds: tuple[type, ...] = (int, float)
    elif hint is Address:
        kinds = (str,)
    else:
        kinds = (typing.get_origin(hint) or hint,)
        kinds = (dict,) if kinds[0] is Mapping else kinds
    # bool is an int in Python; a `true` where a number belongs is a mistake, not 1.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise fail(f"must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if optional and value == "":
        return None
    if hint is float:
        return float(value)
    if hint is Address:
        address = _address(value)
        if address is None:
            raise fail(_ADDRESS_PROBLEM.format(value))
        return address
    if kinds == (dict,):
        return MappingProxyType(dict(value))
    return value


def _table(value: Any, key: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: must be a table" if key else f"{source}: must be a table")
    return value


def _region_table(name: str, table: Any, source: str) -> Mapping[str, Any]:
    _table(table, f"regions.{name}", source)
    if not REGION_PATTERN.match(name):
        raise ConfigError(f"{source}: regions.{name}: is not a region name like us-east-1")
    return table


def _known(table: Mapping[str, Any], names: Any, prefix: str, source: str) -> None:
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ConfigError(f"{source}: {prefix}{unknown[0]}: is not a known setting (check the spelling)")
