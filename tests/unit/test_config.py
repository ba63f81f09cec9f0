"""Configuration from TOML and the environment: defaults, overrides, and one clear line per bad setting (gateway/config.py)."""

from pathlib import Path

import pytest

from gateway.config import Address, ConfigError, from_dict, load

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[gateway]
region = "eu-west-1"
[views.users]
table = "features_users"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def test_shipped_configs_load():
    local = load(REPO / "config/local.toml", env={})
    assert set(local.regions) == {"us-east-1", "eu-west-1", "ap-southeast-1"}
    # Each region on its own loopback address: listeners, DynamoDB Local and the address it connects from.
    assert (local.listen, local.source_address) == (Address("127.0.1.1", 8700), "127.0.1.1")
    eu = load(REPO / "config/local.toml", region="eu-west-1", env={})
    assert (eu.listen, eu.peer_listen.port, eu.dynamodb.endpoint_url) == (Address("127.0.2.1", 8710), 8711, "http://127.0.2.1:8610")
    assert eu.source_address == "127.0.2.1"
    ap = load(REPO / "config/local.toml", region="ap-southeast-1", env={})
    assert (ap.listen.port, ap.peer_listen.port, ap.dynamodb.endpoint_url) == (8720, 8721, "http://127.0.3.1:8620")
    assert ap.source_address == "127.0.3.1"
    example = load(REPO / "config/gateway.example.toml", env={})
    assert example.region == "eu-west-1" and example.dynamodb.endpoint_url is None
    assert example.views["users"].features["age"] == "int"


def test_defaults_and_views(tmp_path):
    config = load(write(tmp_path, MINIMAL), env={})
    assert config.listen == Address("127.0.0.1", 8700)
    assert config.workers == 1
    view = config.views["users"]
    assert (view.table, view.key_attribute, view.features) == ("features_users", "pk", None)


def test_config_is_frozen(tmp_path):
    config = load(write(tmp_path, MINIMAL), env={})
    with pytest.raises(AttributeError):
        config.workers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.views["x"] = None  # type: ignore[index]


def test_environment_overrides_every_level(tmp_path):
    env = {
        "FGW_GATEWAY__WORKERS": "4",
        "FGW_GATEWAY__LISTEN": "0.0.0.0:9000",
        "FGW_DYNAMODB__ENDPOINT_URL": "http://127.0.0.1:1234",
        "FGW_VIEWS__USERS__TABLE": "prod_users",
        "FGW_AUTH__MODE": "off",  # 0.0.0.0 is reachable from other machines: the config must say who may call
        "UNRELATED": "x",
    }
    config = load(write(tmp_path, MINIMAL), env=env)
    assert config.workers == 4
    assert config.listen == Address("0.0.0.0", 9000)
    assert config.dynamodb.endpoint_url == "http://127.0.0.1:1234"
    assert config.views["users"].table == "prod_users"


@pytest.mark.parametrize(
    "text, expected",
    [
        (MINIMAL + "[gateway.extra]\n", "gateway.extra: is not a known setting"),
        (MINIMAL.replace('"eu-west-1"', '"mars"'), "gateway.region: is not a region name"),
        (MINIMAL + "[dynamodb]\nmax_attempts = 0\n", "dynamodb.max_attempts: must be greater than 0"),
        (MINIMAL + "[dynamodb]\nmax_attempts = true\n", "dynamodb.max_attempts: must be int"),
        (MINIMAL.replace('region = "eu-west-1"', 'region = "eu-west-1"\nlisten = "nohost"'), "gateway.listen: must be HOST:PORT"),
        (MINIMAL + 'features = { a = "decimal" }\n', "views.users.features.a: type must be one of"),
        (MINIMAL + 'features = { _a = "int" }\n', "views.users.features._a: feature names may not start"),
        ('[gateway]\nregion = "eu-west-1"\n', "views: at least one view"),
        (MINIMAL + '[regions.us-east-1]\ndownstream = "127.0.0.1:1"\npeer = "127.0.0.1:2"\n', "'eu-west-1' is not one of the regions"),
        ("[gateway\n", "not valid TOML"),
    ],
)
def test_validation_names_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.toml", env={})


def test_from_dict_requires_region():
    with pytest.raises(ConfigError, match="gateway.region: is required"):
        from_dict({"views": {"v": {"table": "tbl"}}})


def test_operations_settings_and_their_defaults():
    base = {"gateway": {"region": "us-east-1"}, "views": {"v": {"table": "tbl"}}}
    config = from_dict(base)
    assert (config.drain_seconds, config.max_concurrent_requests, config.logs.access_sample) == (5.0, 1024, 0.01)
    assert (config.peer.outlier_consecutive_failures, config.peer.outlier_base_ejection) == (5, 5.0)
    config = from_dict(
        {**base, "gateway": {"region": "us-east-1", "drain_seconds": 0, "max_concurrent_requests": 10},
         "logs": {"access_sample": 1}, "peer": {"outlier_max_ejection_percent": 100}}
    )
    assert (config.drain_seconds, config.max_concurrent_requests, config.logs.access_sample) == (0.0, 10, 1.0)


@pytest.mark.parametrize(
    "section, values, key",
    [
        ("gateway", {"drain_seconds": -1}, "gateway.drain_seconds"),
        ("gateway", {"max_concurrent_requests": 0}, "gateway.max_concurrent_requests"),
        ("logs", {"access_sample": 2}, "logs.access_sample"),
        ("logs", {"sample": 1}, "logs.sample"),
        ("peer", {"outlier_max_ejection_percent": 101}, "peer.outlier_max_ejection_percent"),
        ("peer", {"outlier_base_ejection": 10, "outlier_max_ejection": 5}, "peer.outlier_max_ejection"),
        # The README promises a gateway re-reads its rules at least once a second.
        ("routing", {"poll_interval": 1.5}, "routing.poll_interval: must be at most 1 second"),
        ("routing", {"poll_interval": 0}, "routing.poll_interval: must be greater than 0"),
    ],
)
def test_bad_operations_settings_are_named(section, values, key):
    raw = {"gateway": {"region": "us-east-1"}, "views": {"v": {"table": "tbl"}}}
    raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(ConfigError, match=key):
        from_dict(raw)


def test_a_poll_interval_of_one_second_is_accepted():
    raw = {"gateway": {"region": "us-east-1"}, "views": {"v": {"table": "tbl"}}, "routing": {"poll_interval": 1}}
    assert from_dict(raw).routing.poll_interval == 1.0


def test_the_admin_listener_is_off_unless_configured_and_needs_its_own_port(tmp_path):
    assert load(write(tmp_path, MINIMAL), env={}).admin_listen is None
    on = load(write(tmp_path, MINIMAL), env={"FGW_GATEWAY__ADMIN_LISTEN": "0.0.0.0:8702"})
    assert on.admin_listen == Address("0.0.0.0", 8702)
    with pytest.raises(ConfigError, match="gateway.admin_listen: must use a port of its own"):
        load(write(tmp_path, MINIMAL), env={"FGW_GATEWAY__ADMIN_LISTEN": "0.0.0.0:8701"})
    with pytest.raises(ConfigError, match="gateway.admin_listen: must be HOST:PORT"):
        load(write(tmp_path, MINIMAL), env={"FGW_GATEWAY__ADMIN_LISTEN": "localhost"})


@pytest.mark.parametrize(
    "listen, auth, problem",
    [
        ("0.0.0.0:8700", {}, "auth.mode: gateway.listen 0.0.0.0:8700 is reachable from other machines"),
        ("10.1.2.3:8700", {}, "auth.mode: gateway.listen 10.1.2.3:8700"),
        ("0.0.0.0:8700", {"mode": "tokens"}, "auth.tokens_file: is required"),
        ("127.0.0.1:8700", {"mode": "sometimes"}, "auth.mode: must be 'tokens' or 'off'"),
    ],
)
def test_a_gateway_others_can_reach_must_say_who_may_call_it(listen, auth, problem):
    raw = {"gateway": {"region": "us-east-1", "listen": listen}, "auth": auth, "views": {"v": {"table": "tbl"}}}
    with pytest.raises(ConfigError, match=problem):
        from_dict(raw)


@pytest.mark.parametrize("listen", ["127.0.0.1:8700", "127.0.0.53:8700", "localhost:8700", "[::1]:8700"])
def test_a_loopback_gateway_needs_no_auth_and_a_network_one_may_opt_out_explicitly(listen):
    assert from_dict({"gateway": {"region": "us-east-1", "listen": listen}, "views": {"v": {"table": "tbl"}}}).auth.mode is None
    explicit = {"gateway": {"region": "us-east-1", "listen": "0.0.0.0:8700"}, "auth": {"mode": "off"}, "views": {"v": {"table": "tbl"}}}
    assert from_dict(explicit).auth.mode == "off"


def test_source_address_must_be_an_ip_address_and_a_gateway_setting_wins_over_its_region(tmp_path):
    text = MINIMAL.replace('[gateway]\n', '[gateway]\nsource_address = "127.0.9.9"\n') + (
        '[regions.eu-west-1]\ndownstream = "127.0.1.1:8700"\npeer = "127.0.1.1:8701"\nsource_address = "127.0.1.1"\n'
    )
    assert load(write(tmp_path, text), env={}).source_address == "127.0.9.9"
    assert load(write(tmp_path, text.replace('source_address = "127.0.9.9"\n', "")), env={}).source_address == "127.0.1.1"
    with pytest.raises(ConfigError, match="gateway.source_address: is not an IP address"):
        load(write(tmp_path, text.replace("127.0.9.9", "localhost")), env={})


def test_a_fleet_of_witnesses_only_is_refused_and_witnesses_are_no_primary_regions():
    names = ("us-east-1", "eu-west-1")
    regions = {r: {"downstream": f"127.0.0.1:{8700 + i}", "peer": f"127.0.0.1:{8800 + i}"} for i, r in enumerate(names)}
    views = {"items": {"table": "features_items"}}
    witness = {**regions, "eu-west-1": {**regions["eu-west-1"], "witness": True}}
    two = from_dict({"gateway": {"region": "us-east-1"}, "regions": witness, "views": views})
    assert two.primary_regions == ["us-east-1"] and two.regions["eu-west-1"].witness
    only = {r: {**v, "witness": True} for r, v in regions.items()}
    with pytest.raises(ConfigError, match="every region is a witness"):
        from_dict({"gateway": {"region": "us-east-1"}, "regions": only, "views": views})
