"""The package's layout holds: one folder per family, layers that only import downward, no import circle.

Read from the source with ``ast`` (every ``import``, also those inside
functions), so the checks see what the interpreter would load, not what a
module happens to have imported by the time a test runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gateway"

#: The shared core and the top-level wiring: the only modules allowed directly under gateway/.
ROOT_MODULES = {
    "errors", "config", "clock", "background", "deadlines", "members", "dispatcher", "server", "cli",
}

#: Lowest first. A module may import its own layer (without a circle) and any lower one, never a higher one.
LAYERS: list[set[str]] = [
    {"gateway.errors", "gateway.clock", "gateway.config", "gateway.background", "gateway.deadlines", "gateway.obs"},
    {"gateway.http1"},
    {"gateway.store", "gateway.peer"},
    {"gateway.features", "gateway.members"},
    {"gateway.routing", "gateway.lease", "gateway.consensus"},
    {"gateway.switch"},
    {"gateway.dispatcher"},
    {"gateway.api"},
    {"gateway.server"},
    {"gateway.ctl", "gateway.local", "gateway.cli"},
]

#: Test files that test something other than a gateway module of the same path.
UNMIRRORED_TESTS = {
    "tests/unit/test_layout.py",  # this file
    "tests/unit/test_convergence.py",  # tests/support/convergence.py, the integration tests' checker
    "tests/unit/lease/test_simulation.py",  # tests/support/lease_simulation.py over gateway/lease/
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module ``path`` (module ``name``) imports, as dotted names; relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield base
            # ``from gateway.ctl import render`` imports the module gateway.ctl.render.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    """Module -> the modules it imports. Packages are left out: their ``__init__`` is empty (no facades)."""
    known = {name: path for name, path in modules().items() if path.name != "__init__.py"}
    return {
        name: {target for target in imports(path, name) if target in known and target != name}
        for name, path in known.items()
    }


def layer(module: str) -> int:
    for rank, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return rank
    raise AssertionError(f"{module} belongs to no layer of tests/unit/test_layout.py: give it one")


def test_only_the_shared_core_lives_at_the_package_root() -> None:
    loose = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__" and p.stem not in ROOT_MODULES)
    assert loose == [], f"modules outside a subpackage: {loose}"


def test_packages_are_not_facades() -> None:
    """No ``__init__`` re-exports names: every import names the module that defines what it takes."""
    for init in PACKAGE.rglob("__init__.py"):
        body = [n for n in ast.parse(init.read_text()).body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert body == [], f"{init.relative_to(ROOT)} holds code; packages here are folders, not facades"


def test_every_module_has_a_layer_and_imports_only_downward() -> None:
    upward = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in graph().items()
        for target in targets
        if layer(target) > layer(source)
    ]
    assert upward == []


@pytest.mark.parametrize("family", ["gateway.api", "gateway.switch", "gateway.routing", "gateway.store", "gateway.peer"])
def test_the_serving_code_never_imports_the_operator_cli(family: str) -> None:
    offenders = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        if source == family or source.startswith(family + ".")
        for target in targets
        if target == "gateway.ctl" or target.startswith("gateway.ctl.")
    ]
    assert offenders == []


def test_there_is_no_import_circle() -> None:
    edges = graph()
    # Tarjan's strongly connected components: any component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert circles == []


def test_nothing_reaches_into_cpythons_private_hash_modules() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {target}"
        for folder in ("gateway", "tests", "loadtest")
        for path in (ROOT / folder).rglob("*.py")
        for target in imports(path, "x.y")
        if target.split(".")[0] in ("_sha256", "_sha2", "_hashlib", "_md5", "_sha1", "_sha3", "_blake2")
    ]
    assert offenders == []


def test_unit_tests_mirror_the_modules_they_test() -> None:
    known = set(modules())
    strays = []
    for path in sorted((ROOT / "tests" / "unit").rglob("test_*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative in UNMIRRORED_TESTS:
            continue
        parts = path.relative_to(ROOT / "tests" / "unit").with_suffix("").parts
        module = ".".join(("gateway", *parts[:-1], parts[-1].removeprefix("test_")))
        if module not in known:
            strays.append(f"{relative} (no {module})")
    assert strays == []
