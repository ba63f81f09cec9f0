"""Gateway configuration: frozen dataclasses loaded from TOML, overridable by ``FGW_…`` environment variables.

Invariant: a ``Config`` that exists is valid. ``load()`` is the only way to make
one from a file; it applies environment overrides, then ``validate()`` checks
every setting once and raises ``ConfigError`` naming the file and the dotted
key, so a bad config stops the process at start with one clear line.

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
and the DynamoDB endpoint.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

ENV_PREFIX = "FGW_"

#: Feature types a view may declare. ``float`` accepts integers too (a float feature may hold 3).
FEATURE_TYPES = frozenset({"string", "int", "float", "bool", "list", "map", "any"})

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ViewConfig:
    name: str
    table: str
    key_attribute: str = "pk"
    #: Declared features and their types; ``None`` means the view accepts any feature name.
    features: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RegionConfig:
    name: str
    downstream: Address
    peer: Address
    dynamodb_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class DynamoDBConfig:
    #: Empty means the AWS regional endpoint, resolved by botocore.
    endpoint_url: str | None = None
    attempt_timeout: float = 2.0
    max_attempts: int = 6
    #: "http1" (gateway/http1.py, lean keep-alive pool) or "aiohttp" (one shared ClientSession).
    wire: str = "http1"


@dataclass(frozen=True, slots=True)
class MembersConfig:
    """The members table: each gateway's heartbeat, the fleet view and the replication canary."""

    table: str = "feature_gateway_members"
    #: Seconds between heartbeats of this instance's member item.
    heartbeat_interval: float = 1.0
    #: Seconds between reads of the local replica's members (the lag is measured at this resolution).
    observe_interval: float = 1.0
    #: A member whose heartbeat is older than this is gone (also the item's TTL).
    expiry: float = 30.0


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Routing rules (DESIGN.md §5): where they live, how fresh they are kept, how writes are re-routed."""

    table: str = "feature_gateway_routing"
    #: Seconds between reads of the local control-table replica (a ``not_primary`` answer also refreshes at once).
    poll_interval: float = 1.0
    #: Routing attempts of one write: the first, plus re-routes after a ``not_primary`` answer.
    max_attempts: int = 3
    #: Seconds a ``min_version`` read waits for the local replica before reading from the primary.
    min_version_wait: float = 0.5


@dataclass(frozen=True, slots=True)
class BufferConfig:
    """The write buffer (DESIGN.md §7.5): writes held while their scope switches primary, per worker process."""

    #: Longest hold of one write, seconds; then 503 primary_switching.
    window: float = 10.0
    #: Most writes held at once (all scopes); beyond it 503 primary_switching at once.
    max_entries: int = 10_000
    #: Most bytes of held writes (their records' size); beyond it 503 primary_switching at once.
    max_bytes: int = 64 << 20
    #: Held writes sent on to the new primary at once when a switch ends.
    drain_concurrency: int = 64


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    """Planned switches and failovers (DESIGN.md §7)."""

    #: Seconds a switch may take before it is aborted (the old primary stays, epoch + 1).
    max_duration: float = 5.0
    #: Preflight: the new primary's replication lag from the old one must be under this, seconds.
    max_replication_lag: float = 2.0
    #: Anti-flap: seconds between two switches of one scope (unless forced).
    min_interval: float = 60.0
    #: Seconds an old primary keeps acknowledged keys for the fence.
    fence_window: float = 300.0
    #: Most acknowledged keys kept per scope for the fence; past it the fence cannot be verified (abort).
    fence_max_keys: int = 100_000
    #: Schedules: seconds a coordinator lease lasts, and between the holder's checks.
    lease_seconds: float = 10.0
    schedule_interval: float = 1.0
    #: The region whose control-table replica takes every rule and lease write (default: the first region).
    control_region: str | None = None


#: Shortest peer secret accepted, in bytes.
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """The peer API between gateways: HMAC-signed requests on their own listener."""

    #: Environment variable holding the shared secret (used when ``secret_file`` is empty).
    secret_env: str = "FGW_PEER_SECRET"
    secret_file: str | None = None
    #: Accepted difference between a signed request's timestamp and this gateway's clock, in seconds.
    max_skew: float = 30.0
    #: Seconds one forward attempt to one peer instance may take.
    timeout: float = 2.0
    #: Keep-alive connections per peer address.
    pool_size: int = 64
    #: Address other gateways use to reach this one's peer API (default: the peer listen address).
    advertise: str | None = None
    #: mTLS (optional): this gateway's certificate and key, and the CA that signed its peers'.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: Outlier detection per peer address (gateway/circuit_breaker.py, after Envoy's): this many consecutive
    #: failures (no answer, or 503 draining/overloaded) eject the address ...
    outlier_consecutive_failures: int = 5
    #: ... for this many seconds times the number of times it was ejected, at most ``outlier_max_ejection``;
    #: after that one probe request is let through, and its success closes the breaker.
    outlier_base_ejection: float = 5.0
    outlier_max_ejection: float = 300.0
    #: Most addresses of one region ejected at once, in percent (at least one may always be).
    outlier_max_ejection_percent: int = 50
    #: The secret itself, read by ``load()`` from the file or the environment; never printed.
    secret: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry spans (gateway/tracing.py): none, printed to stdout, or sent over OTLP/HTTP."""

    #: "none" (no span is ever created), "console" or "otlp".
    exporter: str = "none"
    #: OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces (empty: the exporter's default).
    endpoint: str | None = None
    #: Fraction of traces started here that are recorded; a request arriving with a sampled parent always is.
    sample_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class LogsConfig:
    #: Fraction of requests written to the access log; answers of 5xx are always written.
    access_sample: float = 0.01


@dataclass(frozen=True, slots=True)
class Config:
    region: str
    listen: Address
    peer_listen: Address
    #: An optional third listener with only /healthz, /readyz and /metrics, for a sidecar whose downstream
    #: port is on loopback (kubelet probes and Prometheus scrapes come from outside the pod's loopback).
    admin_listen: Address | None = None
    workers: int = 1
    #: Largest request body read; larger bodies get 413 even when Content-Length lies.
    max_body_bytes: int = 1 << 20
    #: Deadline of one downstream request, including DynamoDB retries.
    request_timeout: float = 5.0
    #: Seconds SIGTERM waits for in-flight requests before the process exits.
    shutdown_grace: float = 10.0
    #: Seconds after SIGTERM with readiness false while requests are still served, so load balancers move traffic.
    drain_seconds: float = 5.0
    #: Requests one worker serves at once (both listeners; /healthz, /readyz and /metrics not counted);
    #: beyond it 503 ``overloaded`` at once.
    max_concurrent_requests: int = 1024
    #: Most DynamoDB read calls outstanding per table and consistency per worker (lanes of the coalescer).
    read_max_in_flight: int = 4
    #: Seconds every open lane must have waited before another opens; until then reads ride the next batch.
    read_lane_after: float = 0.002
    dynamodb: DynamoDBConfig = field(default_factory=DynamoDBConfig)
    members: MembersConfig = field(default_factory=MembersConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    peer: PeerConfig = field(default_factory=PeerConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    views: Mapping[str, ViewConfig] = field(default_factory=dict)
    regions: Mapping[str, RegionConfig] = field(default_factory=dict)
    #: The file this was loaded from, for messages.
    source: str = "<defaults>"


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


class _Reader:
    """Pulls typed values out of one TOML table, naming the dotted key in every error."""

    def __init__(self, table: Mapping[str, Any], prefix: str, source: str) -> None:
        self.table, self.prefix, self.source = table, prefix, source
        self.seen: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.prefix}{key}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.seen.add(key)
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        # bool is an int in Python; a `true` where a number belongs is a mistake, not 1.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            names = " or ".join(k.__name__ for k in _as_tuple(kind))
            raise self.fail(key, f"must be {names}, got {value!r}")
        return value

    def positive(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, (int, float) if kind is float else kind, default)
        if value <= 0:
            raise self.fail(key, f"must be greater than 0, got {value!r}")
        return kind(value)

    def address(self, key: str, default: Any = ...) -> Address:
        text = self.get(key, str, default)
        if isinstance(text, Address):
            return text
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise self.fail(key, f"must be HOST:PORT with a port from 1 to 65535, got {text!r}")
        return Address(host, int(port))

    def check_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "is not a known setting (check the spelling)")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a ``Config`` from parsed TOML."""
    top = _Reader(raw, "", source)
    gateway = _Reader(top.get("gateway", dict, {}), "gateway.", source)
    ddb = _Reader(top.get("dynamodb", dict, {}), "dynamodb.", source)
    mem = _Reader(top.get("members", dict, {}), "members.", source)
    rt = _Reader(top.get("routing", dict, {}), "routing.", source)
    pr = _Reader(top.get("peer", dict, {}), "peer.", source)
    tr = _Reader(top.get("tracing", dict, {}), "tracing.", source)
    lg = _Reader(top.get("logs", dict, {}), "logs.", source)
    bf = _Reader(top.get("buffer", dict, {}), "buffer.", source)
    sw = _Reader(top.get("switch", dict, {}), "switch.", source)

    regions: dict[str, RegionConfig] = {}
    for name, table in top.get("regions", dict, {}).items():
        r = _Reader(table if isinstance(table, dict) else {}, f"regions.{name}.", source)
        if not isinstance(table, dict):
            raise top.fail(f"regions.{name}", "must be a table")
        if not _REGION_RE.match(name):
            raise top.fail(f"regions.{name}", "is not a region name like us-east-1")
        endpoint = r.get("dynamodb_endpoint", str, "") or None
        regions[name] = RegionConfig(name, r.address("downstream"), r.address("peer"), endpoint)
        r.check_unknown()

    region = gateway.get("region", str)
    if not _REGION_RE.match(region):
        raise gateway.fail("region", f"is not a region name like us-east-1, got {region!r}")
    if regions and region not in regions:
        raise gateway.fail("region", f"{region!r} is not one of the regions this file defines: {', '.join(sorted(regions))}")
    own = regions.get(region)

    views: dict[str, ViewConfig] = {}
    for name, table in top.get("views", dict, {}).items():
        if not isinstance(table, dict):
            raise top.fail(f"views.{name}", "must be a table")
        views[name] = _view(name, _Reader(table, f"views.{name}.", source))
    if not views:
        raise top.fail("views", "at least one view must be configured")

    endpoint_url = ddb.get("endpoint_url", str, "") or (own.dynamodb_endpoint if own else None)
    if endpoint_url and not endpoint_url.startswith(("http://", "https://")):
        raise ddb.fail("endpoint_url", f"must start with http:// or https://, got {endpoint_url!r}")
    dynamodb = DynamoDBConfig(
        endpoint_url=endpoint_url,
        attempt_timeout=ddb.positive("attempt_timeout", float, 2.0),
        max_attempts=ddb.positive("max_attempts", int, 6),
        wire=ddb.get("wire", str, "http1"),
    )
    if dynamodb.wire not in ("http1", "aiohttp"):
        raise ddb.fail("wire", f"must be 'http1' or 'aiohttp', got {dynamodb.wire!r}")

    defaults = MembersConfig()  # slotted: the class attributes are descriptors, not the defaults
    members = MembersConfig(
        table=mem.get("table", str, defaults.table),
        heartbeat_interval=mem.positive("heartbeat_interval", float, defaults.heartbeat_interval),
        observe_interval=mem.positive("observe_interval", float, defaults.observe_interval),
        expiry=mem.positive("expiry", float, defaults.expiry),
    )
    if members.expiry <= 2 * members.heartbeat_interval:
        raise mem.fail("expiry", f"must be more than twice heartbeat_interval ({members.heartbeat_interval:g}s)")

    routing_defaults = RoutingConfig()
    routing = RoutingConfig(
        table=rt.get("table", str, routing_defaults.table),
        poll_interval=rt.positive("poll_interval", float, routing_defaults.poll_interval),
        max_attempts=rt.positive("max_attempts", int, routing_defaults.max_attempts),
        min_version_wait=rt.positive("min_version_wait", float, routing_defaults.min_version_wait),
    )
    if routing.poll_interval > 1.0:
        raise rt.fail("poll_interval", f"must be at most 1 second (DESIGN.md §5), got {routing.poll_interval:g}")
    peer_defaults = PeerConfig()
    peer = PeerConfig(
        secret_env=pr.get("secret_env", str, peer_defaults.secret_env),
        secret_file=pr.get("secret_file", str, "") or None,
        max_skew=pr.positive("max_skew", float, peer_defaults.max_skew),
        timeout=pr.positive("timeout", float, peer_defaults.timeout),
        pool_size=pr.positive("pool_size", int, peer_defaults.pool_size),
        advertise=str(pr.address("advertise")) if "advertise" in pr.table else None,
        tls_cert=pr.get("tls_cert", str, "") or None,
        tls_key=pr.get("tls_key", str, "") or None,
        tls_ca=pr.get("tls_ca", str, "") or None,
        outlier_consecutive_failures=pr.positive(
            "outlier_consecutive_failures", int, peer_defaults.outlier_consecutive_failures
        ),
        outlier_base_ejection=pr.positive("outlier_base_ejection", float, peer_defaults.outlier_base_ejection),
        outlier_max_ejection=pr.positive("outlier_max_ejection", float, peer_defaults.outlier_max_ejection),
        outlier_max_ejection_percent=pr.positive(
            "outlier_max_ejection_percent", int, peer_defaults.outlier_max_ejection_percent
        ),
    )
    if peer.outlier_max_ejection_percent > 100:
        raise pr.fail("outlier_max_ejection_percent", f"must be at most 100, got {peer.outlier_max_ejection_percent}")
    if peer.outlier_max_ejection < peer.outlier_base_ejection:
        raise pr.fail("outlier_max_ejection", "must be at least outlier_base_ejection")
    tracing = TracingConfig(
        exporter=tr.get("exporter", str, "none"),
        endpoint=tr.get("endpoint", str, "") or None,
        sample_ratio=_fraction(tr, "sample_ratio", 1.0),
    )
    if tracing.exporter not in ("none", "console", "otlp"):
        raise tr.fail("exporter", f"must be 'none', 'console' or 'otlp', got {tracing.exporter!r}")
    if tracing.endpoint and not tracing.endpoint.startswith(("http://", "https://")):
        raise tr.fail("endpoint", f"must start with http:// or https://, got {tracing.endpoint!r}")
    logs = LogsConfig(access_sample=_fraction(lg, "access_sample", LogsConfig().access_sample))
    drain_seconds = gateway.get("drain_seconds", (int, float), 5.0)
    if drain_seconds < 0:
        raise gateway.fail("drain_seconds", f"must be 0 or more, got {drain_seconds!r}")
    if bool(peer.tls_cert) != bool(peer.tls_key) or (peer.tls_cert and not peer.tls_ca):
        raise pr.fail("tls_cert", "mTLS needs tls_cert, tls_key and tls_ca together")

    bd = BufferConfig()
    buffer = BufferConfig(
        window=bf.positive("window", float, bd.window),
        max_entries=bf.positive("max_entries", int, bd.max_entries),
        max_bytes=bf.positive("max_bytes", int, bd.max_bytes),
        drain_concurrency=bf.positive("drain_concurrency", int, bd.drain_concurrency),
    )
    sd = SwitchConfig()
    switch = SwitchConfig(
        max_duration=sw.positive("max_duration", float, sd.max_duration),
        max_replication_lag=sw.positive("max_replication_lag", float, sd.max_replication_lag),
        min_interval=sw.positive("min_interval", float, sd.min_interval),
        fence_window=sw.positive("fence_window", float, sd.fence_window),
        fence_max_keys=sw.positive("fence_max_keys", int, sd.fence_max_keys),
        lease_seconds=sw.positive("lease_seconds", float, sd.lease_seconds),
        schedule_interval=sw.positive("schedule_interval", float, sd.schedule_interval),
        control_region=sw.get("control_region", str, "") or None,
    )
    if switch.control_region and regions and switch.control_region not in regions:
        raise sw.fail("control_region", f"{switch.control_region!r} is not one of the regions: {', '.join(regions)}")

    config = Config(
        region=region,
        listen=gateway.address("listen", own.downstream if own else Address("127.0.0.1", 8700)),
        peer_listen=gateway.address("peer_listen", own.peer if own else Address("0.0.0.0", 8701)),
        admin_listen=gateway.address("admin_listen") if gateway.get("admin_listen", str, "") else None,
        workers=gateway.positive("workers", int, 1),
        max_body_bytes=gateway.positive("max_body_bytes", int, 1 << 20),
        request_timeout=gateway.positive("request_timeout", float, 5.0),
        shutdown_grace=gateway.positive("shutdown_grace", float, 10.0),
        drain_seconds=float(drain_seconds),
        max_concurrent_requests=gateway.positive("max_concurrent_requests", int, 1024),
        read_max_in_flight=gateway.positive("read_max_in_flight", int, 4),
        read_lane_after=gateway.positive("read_lane_after", float, 0.002),
        dynamodb=dynamodb,
        members=members,
        routing=routing,
        peer=peer,
        tracing=tracing,
        logs=logs,
        buffer=buffer,
        switch=switch,
        views=MappingProxyType(views),
        regions=MappingProxyType(regions),
        source=source,
    )
    for reader in (top, gateway, ddb, mem, rt, pr, bf, sw, tr, lg):
        reader.check_unknown()
    if config.admin_listen is not None and config.admin_listen.port in (config.listen.port, config.peer_listen.port):
        # SO_REUSEPORT would let two listeners share the port and split its connections between them.
        raise gateway.fail("admin_listen", f"must use a port of its own, not that of listen or peer_listen ({config.admin_listen})")
    return config


def _fraction(r: _Reader, key: str, default: float) -> float:
    value = r.get(key, (int, float), default)
    if not 0.0 <= value <= 1.0:
        raise r.fail(key, f"must be from 0.0 to 1.0, got {value!r}")
    return float(value)


def _view(name: str, r: _Reader) -> ViewConfig:
    if not _NAME_RE.match(name):
        raise r.fail("", "view names may hold letters, digits, '_', '-' and '.' only")
    table = r.get("table", str)
    if not _NAME_RE.match(table) or len(table) < 3:
        raise r.fail("table", f"is not a valid DynamoDB table name, got {table!r}")
    key_attribute = r.get("key_attribute", str, "pk")
    declared = r.get("features", dict, None)
    features = None
    if declared is not None:
        for feature, kind in declared.items():
            if kind not in FEATURE_TYPES:
                raise r.fail(f"features.{feature}", f"type must be one of {', '.join(sorted(FEATURE_TYPES))}, got {kind!r}")
            if feature.startswith("_") or feature == key_attribute:
                raise r.fail(f"features.{feature}", "feature names may not start with '_' or equal the key attribute")
        features = MappingProxyType(dict(declared))
    r.check_unknown()
    return ViewConfig(name=name, table=table, key_attribute=key_attribute, features=features)
