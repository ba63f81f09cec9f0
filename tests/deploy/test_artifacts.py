"""Offline validation of the deployment artifacts: ``Dockerfile`` and everything under ``deploy/``.

Each artifact passes its validator (kubernetes-validate in strict mode against one fixed
Kubernetes version, cfn-lint, hadolint, and for the dashboard the metric names the gateway
really exports), and a deliberately broken copy written to ``tmp_path`` fails it, for the
reason the tool gives. Then the artifacts are checked against each other and against the
gateway's code, where drift would only show in production: the ConfigMap's TOML loads with
each pod's environment, the grace period covers the drain, every configured table exists in
the template and the IAM policy.

The tools come with the ``test`` extra and run from this interpreter's ``bin`` (never from
PATH), with HOME pointing at an empty folder so no personal ``.hadolint.yaml`` or
``.cfnlintrc`` changes the verdict. No network, Docker or cluster is needed.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import Config, ConfigError
from gateway.config import load as load_config
from gateway.obs.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
TEMPLATE = DEPLOY / "cloudformation" / "global-tables.yaml"
POLICY = DEPLOY / "iam" / "gateway-policy.json"
TRUST_POLICY = DEPLOY / "iam" / "gateway-trust-policy.json"
DASHBOARD = DEPLOY / "grafana" / "feature-gateway.json"
DOCKERFILE = REPO / "Dockerfile"

#: The Kubernetes version the manifests are validated against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.30"
#: Seconds a pod's grace period must leave beyond preStop + shutdown_grace (SIGKILL must not cut a drain short).
GRACE_MARGIN = 5
#: What the tests stand in for the values Kubernetes fills in: the pod's IP and the peer Secret.
POD_IP = "10.1.2.3"
PEER_SECRET = "0123456789abcdef0123456789abcdef"


# --- running the tools -------------------------------------------------------------------------


def tool(name: str) -> str:
    """A console script installed in this interpreter's environment (the venv's bin)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}; run `make setup` (it comes with the test extra)")
    return str(path)


def isolated_env(home: Path) -> dict[str, str]:
    """The environment without user configuration of the linters."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HADOLINT_", "CFNLINT_", "CFN_LINT"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), NO_COLOR="1")
    return env


def hadolint(dockerfile: Path, home: Path) -> tuple[int, list[dict[str, Any]]]:
    """Exit code and findings (``code``, ``level``, ``line``, ``message``)."""
    proc = subprocess.run(
        [tool("hadolint"), "--format", "json", str(dockerfile)],
        check=False, capture_output=True, text=True, cwd=home, env=isolated_env(home), timeout=60,
    )
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"hadolint answered no JSON (exit {proc.returncode}): {proc.stdout}{proc.stderr}")


def manifest_errors(path: Path) -> list[str]:
    """kubernetes-validate (strict: unknown fields fail) on every document of a YAML file."""
    errors = []
    for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
        where = f"{path.name}[{i}]"
        if doc is None:
            continue
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            errors.append(f"{where}: not a Kubernetes object (no apiVersion and kind)")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where} {doc['kind']} at {'.'.join(map(str, exc.path)) or '/'}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
    return errors


@pytest.fixture(scope="module")
def cfn_lint_findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """cfn-lint's findings per template, for the real template and a broken copy, in one run (it starts slowly)."""
    home = tmp_path_factory.mktemp("cfn-lint-home")
    broken = tmp_path_factory.mktemp("cfn") / "broken.yaml"
    text = TEMPLATE.read_text(encoding="utf-8")
    assert text.count("      BillingMode: PAY_PER_REQUEST") == 3
    broken.write_text(text.replace("      BillingMode: PAY_PER_REQUEST", "      BillingMod: PAY_PER_REQUEST", 1))
    templates = [str(TEMPLATE), str(broken)]
    proc = subprocess.run(
        [tool("cfn-lint"), "--format", "json", *templates],
        check=False, capture_output=True, text=True, cwd=home, env=isolated_env(home), timeout=120,
    )
    try:
        findings = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"cfn-lint answered no JSON (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
    # Exit code bits: 2 errors, 4 warnings, 8 informational. The broken copy must set the error bit.
    assert proc.returncode & 2, f"cfn-lint exit {proc.returncode} although one template is broken"
    by_file: dict[str, list[dict[str, Any]]] = {"real": [], "broken": []}
    for finding in findings:
        by_file["real" if finding["Filename"] == str(TEMPLATE) else "broken"].append(finding)
    return by_file


# --- reading the artifacts ---------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(KUBERNETES.rglob("*.yaml"))


@functools.cache
def manifests() -> tuple[dict[str, Any], ...]:
    """Every object of every manifest, parsed once per session; tests that change one change a deep copy."""
    return tuple(
        doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc
    )


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in deploy/kubernetes, found {len(found)}"
    return found[0]


def deployments() -> dict[str, dict[str, Any]]:
    """The pool and the sidecar example, by role."""
    return {"pool": manifest("Deployment", "feature-gateway"), "sidecar": manifest("Deployment", "ranker")}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def all_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(deployment)
    return spec.get("initContainers", []) + spec["containers"]


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in all_containers(deployment) if c["name"] == "gateway"]
    return container


def gateway_toml() -> str:
    return manifest("ConfigMap", "feature-gateway")["data"]["gateway.toml"]


def pod_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: ``$(VAR)`` expands variables defined before it."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[var["name"]] = POD_IP
        elif "secretKeyRef" in var["valueFrom"]:
            env[var["name"]] = PEER_SECRET
    return env


def load_pod_config(deployment: dict[str, Any], tmp_path: Path, **env: str) -> Config:
    """The configuration a gateway of this pod loads: the ConfigMap's TOML plus the pod's environment."""
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml(), encoding="utf-8")
    return load_config(path, env={**pod_env(gateway_container(deployment)), **env})


def pre_stop_seconds(container: dict[str, Any]) -> int:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop should be a plain sleep, got {command}"
    return int(command[1])


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A port number, or the number of the container's port of that name."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
    return int(number)


def probe_target(container: dict[str, Any], probe: dict[str, Any]) -> tuple[str, int]:
    """(path, port) an HTTP GET probe checks."""
    assert "httpGet" in probe, f"the gateway's probes are HTTP GETs, got {sorted(probe)}"
    return probe["httpGet"]["path"], container_port(container, probe["httpGet"]["port"])


def reachable_ports(config: Config) -> set[int]:
    """Ports of the listeners that serve /healthz, /readyz and /metrics on the pod's IP (the kubelet's, Prometheus')."""
    return {a.port for a in (config.listen, config.admin_listen) if a is not None and a.host == "0.0.0.0"}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (``!Ref``, ``!GetAtt``) read as plain values."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None)


def template_tables() -> dict[str, dict[str, Any]]:
    """The template's DynamoDB global tables, by table name."""
    template = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)
    return {
        r["Properties"]["TableName"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::DynamoDB::GlobalTable"
    }


# --- the dashboard against the gateway's metrics -------------------------------------------------

_METRIC = re.compile(r"\bgateway_[a-zA-Z0-9_]*[a-zA-Z0-9]")
_HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def exported_metric_names() -> set[str]:
    """Names the gateway's /metrics exposes, from its registry: a counter family ``x`` is exposed as ``x_total``."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + {"counter": "_total", "info": "_info"}.get(family.type, ""))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target, collapsed rows included, and every query variable."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield f"panel {panel.get('title')!r}", target["expr"]

    yield from walk(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            yield f"variable ${variable['name']}", query.get("query", "") if isinstance(query, dict) else query or ""


def dashboard_problems(dashboard: dict[str, Any], exported: set[str]) -> list[str]:
    problems = []
    if dashboard.get("schemaVersion", 0) < 36:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} is older than 36")
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        problems.append("no $datasource variable of Prometheus data sources")
    for name in ("region", "instance"):
        if name not in variables:
            problems.append(f"no ${name} variable")
    ids = [p["id"] for p in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append("panel ids repeat")
    for panel in dashboard.get("panels", []):
        if panel.get("type") != "row" and panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {panel.get('title')!r} does not use the $datasource variable")
    for where, expr in dashboard_queries(dashboard):
        for name in _METRIC.findall(expr):
            base = _HISTOGRAM_SERIES.sub("", name)
            if name not in exported and base not in exported:
                problems.append(f"{where} uses {name}, which the gateway does not export")
    return problems


# --- Kubernetes --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_manifest_validates_strictly(path):
    assert manifest_errors(path) == []


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("imagePulPolicy", "'imagePulPolicy' was unexpected"),  # a misspelled field (strict mode)
        ("replicas", "'three' is not of type 'integer'"),  # a wrong type
        ("apiVersion", "Couldn't find schema for kind Deployment with api version apps/v2"),
    ],
)
def test_broken_manifest_fails_validation(tmp_path, breakage, reason):
    deployment = copy.deepcopy(deployments()["pool"])
    if breakage == "imagePulPolicy":
        container = pod_spec(deployment)["containers"][0]
        container["imagePulPolicy"] = container.pop("imagePullPolicy")
    elif breakage == "replicas":
        deployment["spec"]["replicas"] = "three"
    else:
        deployment["apiVersion"] = "apps/v2"
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    errors = manifest_errors(broken)
    assert len(errors) == 1 and reason in errors[0], errors


def test_pods_load_a_valid_gateway_config(tmp_path):
    pool = load_pod_config(deployments()["pool"], tmp_path)
    assert (str(pool.listen), str(pool.peer_listen)) == ("0.0.0.0:8700", "0.0.0.0:8701")
    sidecar = load_pod_config(deployments()["sidecar"], tmp_path)
    assert (str(sidecar.listen), str(sidecar.peer_listen)) == ("127.0.0.1:8700", "0.0.0.0:8701")
    for config in (pool, sidecar):
        # Peers of other regions reach the pod's own address, and the Secret arrives as the peer secret.
        assert (config.peer.advertise, config.peer.secret) == (f"{POD_IP}:8701", PEER_SECRET.encode())
    # Several workers share the port but not their metrics: a scrape would see one at random.
    assert pool.workers == sidecar.workers == 1


@pytest.mark.parametrize("role", ["pool", "sidecar"])
def test_grace_period_covers_the_drain(tmp_path, role):
    deployment = deployments()[role]
    config = load_pod_config(deployment, tmp_path)
    needed = pre_stop_seconds(gateway_container(deployment)) + config.shutdown_grace + GRACE_MARGIN
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= needed


@pytest.mark.parametrize("role", ["pool", "sidecar"])
def test_gateway_probes_scrapes_and_peer_secret(role, tmp_path):
    deployment = deployments()[role]
    gateway = gateway_container(deployment)
    # Probes and scrapes connect to the pod's IP: they need a listener on all interfaces that serves them
    # (the pool's downstream listener; the sidecar's admin listener, its downstream one being on loopback).
    ports = reachable_ports(load_pod_config(deployment, tmp_path))
    assert ports, f"the {role} gateway serves /healthz, /readyz and /metrics on loopback only"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert probe_target(gateway, gateway[probe])[0] == path
        assert probe_target(gateway, gateway[probe])[1] in ports
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics" and int(annotations["prometheus.io/port"]) in ports
    (secret_env,) = [e for e in gateway["env"] if e["name"] == "FGW_PEER_SECRET"]
    ref = secret_env["valueFrom"]["secretKeyRef"]
    assert ref["key"] in manifest("Secret", ref["name"])["stringData"]
    assert gateway["args"] == ["--config", "/etc/feature-gateway/gateway.toml"]


def test_example_secret_placeholder_is_refused_by_the_gateway(tmp_path):
    placeholder = manifest("Secret", "feature-gateway-peer")["stringData"]["peer-secret"]
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        load_pod_config(deployments()["pool"], tmp_path, FGW_PEER_SECRET=placeholder)


@pytest.mark.parametrize("role", ["pool", "sidecar"])
def test_pods_are_hardened_and_sized(role):
    deployment = deployments()[role]
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "feature-gateway"
    for container in all_containers(deployment):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, (container["name"], bound)


def test_service_account_carries_an_irsa_role():
    annotations = manifest("ServiceAccount", "feature-gateway")["metadata"]["annotations"]
    assert re.fullmatch(r"arn:aws:iam::ACCOUNT_ID:role/[\w+=,.@-]+", annotations["eks.amazonaws.com/role-arn"])


def test_pool_service_pdb_and_hpa_select_the_pool():
    pool = deployments()["pool"]
    labels = pool["spec"]["template"]["metadata"]["labels"]
    service = manifest("Service", "feature-gateway")["spec"]
    assert service["selector"].items() <= labels.items()
    assert {(p["port"], p["targetPort"]) for p in service["ports"]} == {(8700, "downstream"), (8701, "peer")}
    container_ports = {p["name"]: p["containerPort"] for p in gateway_container(pool)["ports"]}
    assert container_ports == {"downstream": 8700, "peer": 8701}
    pdb = manifest("PodDisruptionBudget", "feature-gateway")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    hpa = manifest("HorizontalPodAutoscaler", "feature-gateway")["spec"]
    assert (hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]) == ("Deployment", pool["metadata"]["name"])
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert hpa["minReplicas"] > pdb["maxUnavailable"]


# --- CloudFormation and IAM -------------------------------------------------------------------------


def test_template_passes_cfn_lint(cfn_lint_findings):
    assert cfn_lint_findings["real"] == []


def test_broken_template_fails_cfn_lint(cfn_lint_findings):
    reasons = {(f["Rule"]["Id"], f["Level"], f["Message"]) for f in cfn_lint_findings["broken"]}
    assert ("E3002", "Error", "Additional properties are not allowed ('BillingMod' was unexpected. Did you mean 'BillingMode'?)") in reasons


def test_template_tables_match_the_gateway_config(tmp_path):
    config = load_pod_config(deployments()["pool"], tmp_path)
    tables = template_tables()
    assert set(tables) == {v.table for v in config.views.values()} | {config.members.table, config.routing.table}
    for name, table in tables.items():
        assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}], name
        assert table["BillingMode"] == "PAY_PER_REQUEST", name
        assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}, name
        assert len(table["Replicas"]) == 3, name
        for replica in table["Replicas"]:
            assert replica["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
    assert tables[config.members.table]["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


#: The ``Store`` methods (gateway/store/base.py) and the DynamoDB action each one calls.
STORE_ACTIONS = {
    "get_item": "GetItem", "batch_get_item": "BatchGetItem", "put_item": "PutItem", "update_item": "UpdateItem",
    "delete_item": "DeleteItem", "batch_write_item": "BatchWriteItem", "scan": "Scan",
}
#: What the table argument of each store call in the serving code names: a feature table, or a config table.
TABLE_ARGUMENTS = {
    "view.table": "features", "table": "features",  # the dispatcher, participant, health probe, read coalescer
    "self.rules_table": "routing", "self._table_name": "routing", "self._config.routing.table": "routing",
    "self._rules_table": "routing",  # the lease promises (gateway/lease/book.py)
    "self._table": "members", "self.members_table": "members",
}
#: Store calls of the serving code that only the operator CLI reaches (``gatewayctl rules delete``).
CLI_ONLY = {
    ("gateway/routing/control_table.py", "delete", "delete_item"),
    # A decided delete, written to each replica: only `gatewayctl rules delete` decides one (no scheduler deletes).
    ("gateway/routing/control_table.py", "_publish", "delete_item"),
    ("gateway/routing/control_table.py", "publish_in", "delete_item"),
}


def store_calls() -> set[tuple[str, str, str]]:
    """(module, enclosing function, store method) of every store call the gateway process can make, and its table.

    Read from the source: every ``<something with store in its name>.<Store method>(table, ...)`` outside
    the operator CLI (gateway/ctl), the local cluster (gateway/local) and the store clients themselves.
    """
    import ast

    found = set()
    for path in sorted((REPO / "gateway").rglob("*.py")):
        module = path.relative_to(REPO).as_posix()
        if module.startswith(("gateway/ctl/", "gateway/local/", "gateway/store/")) or module == "gateway/cli.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                target = call.func
                if not (isinstance(target, ast.Attribute) and target.attr in STORE_ACTIONS):
                    continue
                if "store" not in ast.unparse(target.value):
                    continue
                if (module, function.name, target.attr) in CLI_ONLY:
                    continue
                table = ast.unparse(call.args[0])
                assert table in TABLE_ARGUMENTS, f"{module}:{call.lineno} calls {target.attr} on {table}: name its table"
                found.add((TABLE_ARGUMENTS[table], target.attr, module))
    return found


def test_the_scan_of_store_calls_sees_every_kind_of_table():
    calls = store_calls()
    assert {kind for kind, _, _ in calls} == {"features", "routing", "members"}
    assert ("features", "put_item", "gateway/dispatcher.py") in calls  # the write path itself
    # The CLI-only exemption names a function only gatewayctl calls.
    callers = [p for p in (REPO / "gateway").rglob("*.py") if re.search(r"control\.delete\(", p.read_text(encoding="utf-8"))]
    assert {p.relative_to(REPO).parts[1] for p in callers} == {"ctl"}


def test_iam_policy_is_least_privilege_for_the_configured_tables(tmp_path):
    config = load_pod_config(deployments()["pool"], tmp_path)
    granted: dict[str, set[str]] = {}
    for statement in json.loads(POLICY.read_text(encoding="utf-8"))["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        for action in statement["Action"]:
            assert "*" not in action and action.startswith("dynamodb:"), action
        for resource in statement["Resource"]:
            match = re.fullmatch(r"arn:aws:dynamodb:\*:ACCOUNT_ID:table/([\w.-]+)", resource)
            assert match, resource
            granted.setdefault(match[1], set()).update(a.removeprefix("dynamodb:") for a in statement["Action"])
    # Exactly what the code calls, per table: a grant nothing calls is a privilege too many.
    called: dict[str, set[str]] = {}
    for kind, method, _ in store_calls():
        called.setdefault(kind, set()).add(STORE_ACTIONS[method])
    tables = {"routing": [config.routing.table], "members": [config.members.table],
              "features": [view.table for view in config.views.values()]}
    assert granted == {table: called[kind] for kind, names in tables.items() for table in names}
    trust = json.loads(TRUST_POLICY.read_text(encoding="utf-8"))
    assert {s["Action"] for s in trust["Statement"]} == {"sts:AssumeRoleWithWebIdentity"}


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_problems(text: str) -> list[str]:
    """What hadolint does not check: the final stage's user, base, health check and entry point."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [line.strip().split(None, 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        keyword, rest = instruction[0].upper(), instruction[1] if len(instruction) > 1 else ""
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    problems = []
    if len(stages) < 2:
        problems.append("not a multi-stage build")
    final = stages[-1]
    if "-slim" not in final[0][1]:
        problems.append(f"final stage is not on a slim base: {final[0][1]}")
    users = [rest.split(":")[0] for keyword, rest in final if keyword == "USER"]
    if not users:
        problems.append("final stage sets no USER: the gateway would run as root")
    elif not users[-1].isdigit() or users[-1] == "0":
        problems.append(f"final USER {users[-1]!r} is not a numeric non-root uid (runAsNonRoot needs one)")
    if not any(keyword == "HEALTHCHECK" for keyword, _ in final):
        problems.append("no HEALTHCHECK")
    entrypoints = [json.loads(rest) for keyword, rest in final if keyword == "ENTRYPOINT"]
    if not entrypoints or entrypoints[-1] != ["feature-gateway", "serve"]:
        problems.append("ENTRYPOINT is not [\"feature-gateway\", \"serve\"]")
    for keyword, rest in final:
        if keyword == "RUN" and re.search(r"\b(apt-get|apk|pip)\b.*\b(gcc|g\+\+|clang|build-essential|build-base)\b", rest):
            problems.append(f"final stage installs a compiler: {rest}")
    return problems


def test_dockerfile_passes_hadolint(tmp_path):
    assert hadolint(DOCKERFILE, tmp_path) == (0, [])
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_broken_dockerfile_fails_hadolint(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y sudo gcc\n"
        "RUN sudo pip install feature-gateway\n"
        'ENTRYPOINT ["feature-gateway", "serve"]\n'
    )
    code, findings = hadolint(broken, tmp_path)
    assert code != 0
    reasons = {f["code"]: f["message"] for f in findings}
    assert reasons["DL3007"].startswith("Using latest is prone to errors")
    assert reasons["DL3004"].startswith("Do not use sudo")
    problems = dockerfile_problems(broken.read_text())
    assert "final stage sets no USER: the gateway would run as root" in problems
    assert "final stage installs a compiler: apt-get update && apt-get install -y sudo gcc" in problems


def test_dockerfile_with_root_user_fails_hadolint(tmp_path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text(encoding="utf-8").replace("USER 10001:10001", "USER root"))
    code, findings = hadolint(broken, tmp_path)
    assert code != 0
    assert {f["code"]: f["message"] for f in findings}["DL3002"] == "Last USER should not be root"


# --- Grafana ---------------------------------------------------------------------------------------


def test_dashboard_uses_only_metrics_the_gateway_exports():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard_problems(dashboard, exported_metric_names()) == []


def test_broken_dashboard_is_caught():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panel = copy.deepcopy(next(p for p in dashboard["panels"] if p["type"] == "timeseries"))
    panel["id"] = max(p["id"] for p in dashboard["panels"]) + 1
    panel["targets"][0]["expr"] = "sum(rate(gateway_nonexistent_total[5m]))"
    dashboard["panels"].append(panel)
    dashboard["schemaVersion"] = 27
    exported = exported_metric_names()
    problems = dashboard_problems(dashboard, exported)
    assert f"panel {panel['title']!r} uses gateway_nonexistent_total, which the gateway does not export" in problems
    assert "schemaVersion 27 is older than 36" in problems


def test_dashboard_metric_names_come_from_the_registry():
    exported = exported_metric_names()
    # A counter family is exposed with _total; a histogram by its base name (its series add _bucket/_sum/_count).
    assert {"gateway_downstream_rq_total", "gateway_downstream_rq_seconds", "gateway_replication_lag_seconds"} <= exported
    expr = 'histogram_quantile(0.99, sum by (le) (rate(gateway_downstream_rq_seconds_bucket{region=~"$region"}[5m])))'
    assert [_HISTOGRAM_SERIES.sub("", n) for n in _METRIC.findall(expr)] == ["gateway_downstream_rq_seconds"]



def test_the_network_policy_admits_only_the_pools_two_ports_to_the_pool():
    pool = deployments()["pool"]
    policy = manifest("NetworkPolicy", "feature-gateway")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pool["spec"]["template"]["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    ports = [(p["port"], p["protocol"]) for rule in policy["ingress"] for p in rule["ports"]]
    assert sorted(ports) == [(8700, "TCP"), (8701, "TCP")]
    peer_rule = next(rule for rule in policy["ingress"] if rule["ports"][0]["port"] == 8701)
    assert peer_rule["from"] and all("ipBlock" in source for source in peer_rule["from"])  # never "from anywhere"


def test_the_pool_authenticates_its_callers_with_the_tokens_secret(tmp_path):
    from gateway.api.auth import parse_tokens

    pool = deployments()["pool"]
    config = load_pod_config(pool, tmp_path)
    assert config.auth.mode == "tokens"
    mounts = {m["name"]: m["mountPath"] for m in gateway_container(pool)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(pool)["volumes"]}
    assert str(Path(config.auth.tokens_file).parent) == mounts["tokens"]
    secret = manifest("Secret", "feature-gateway-tokens")
    assert volumes["tokens"]["secret"]["secretName"] == secret["metadata"]["name"]
    example = parse_tokens(secret["stringData"][Path(config.auth.tokens_file).name], "tokens.example.yaml")
    assert [p.name for p in example.values()] == ["ranker"]
    # The sidecar listens on loopback: only its own pod's containers reach it, and it needs no tokens.
    assert load_pod_config(deployments()["sidecar"], tmp_path).auth.mode is None
