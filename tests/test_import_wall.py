"""Two walls. The core and the headless CLI never pull in textual or rich (the UI is a thin
layer); and packages import only downward, with no cycles among modules (docs/architecture.md
draws the layers). The second is read from the source with `ast`, lazy imports included."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import tokentop

CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(tokentop.__path__, "tokentop.")
    if not m.name.startswith("tokentop.ui")
)


def test_core_modules_exist() -> None:
    assert "tokentop.engine.engine" in CORE_MODULES
    assert "tokentop.cli" in CORE_MODULES


def test_core_and_headless_cli_never_import_textual_or_rich(tmp_path) -> None:
    code = (
        "import sys, importlib\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "from tokentop.cli import main\n"
        f"main(['sessions', '--json', '--no-cache', '--claude-dir', {str(tmp_path)!r}])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "assert not bad, bad\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("clean")


SRC = Path(__file__).resolve().parents[1] / "src" / "tokentop"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("commands",),
    ("ui",),
    ("demo", "telemetry", "integrations", "render"),
    ("history",),
    ("processes",),
    ("policy",),
    ("engine",),
    ("sources",),
    ("basics",),
)
"""Top first. A module may import its own package, and anything in a lower layer."""
BASICS_TOO = {"tokentop.policy.settings"}
"""The schema of `[policy.*]`: config.py reads it, and it imports only the basics."""
LAZY_CYCLES = {frozenset({"tokentop.engine.engine", "tokentop.engine.coldscan"})}
"""Cycles allowed because each side imports the other only inside a function: the engine
starts a cold scan, and the scan's worker process runs an engine of its own."""


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every tokentop module `path` imports, resolved to a module (not a name in one)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tokentop"):
                    yield _module(alias.name, known)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tokentop"):
            base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else _module(base, known)


def _module(name: str, known: dict[str, Path]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def layer_of(module: str) -> int:
    if module in BASICS_TOO:
        return len(LAYERS) - 1
    parts = module.split(".")
    group = parts[1] if len(parts) > 2 or (len(parts) == 2 and _is_package(parts[1])) else ""
    name = group or (parts[1] if len(parts) > 1 else "")
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    return len(LAYERS) - 1  # a top-level basic module


def _is_package(name: str) -> bool:
    return (SRC / name).is_dir()


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and _is_package(parts[1])) else ""


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: set(imports_of(p, known)) - {m, "tokentop"} for m, p in known.items()}


def test_packages_import_only_downward() -> None:
    upward = []
    for module, imported in graph().items():
        for target in imported:
            same_package = package_of(target) and package_of(target) == package_of(module)
            if not same_package and layer_of(target) < layer_of(module):
                upward.append(f"{module} -> {target}")
            sideways = layer_of(target) == layer_of(module) and package_of(target)
            if not same_package and sideways and package_of(module):
                upward.append(f"{module} -> {target} (sideways)")
    assert upward == []


def test_no_import_cycles() -> None:
    edges = graph()
    cycles = [c for c in _strongly_connected(edges) if len(c) > 1]
    assert [sorted(c) for c in cycles if frozenset(c) not in LAZY_CYCLES] == []


def test_the_contract_sees_the_layout() -> None:
    """Guards the guard: it finds the packages and some real upward edge would fail."""
    known = modules()
    assert "tokentop.engine.engine" in known and "tokentop.ui.app" in known
    assert layer_of("tokentop.ui.app") < layer_of("tokentop.engine.engine")
    assert layer_of("tokentop.engine.engine") < layer_of("tokentop.model")
    assert "tokentop.engine.tail" in graph()["tokentop.engine.engine"]


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively (the graph is small, but recursion limits are real)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def test_the_policy_is_made_in_one_place_and_never_in_the_ui() -> None:
    """One Watchdog: `PolicyState()` is built only in policy/watchdog.py, and nothing in ui/
    calls a detector, a budget measure or a crossing (the UI shows judgements)."""
    judging = {"PolicyState", "evaluate", "detect", "budget_use", "crossings", "status_of"}
    found = []
    made = 0
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "PolicyState" and module != "tokentop.policy.watchdog":
                found.append(f"{module}: PolicyState()")
            made += name == "PolicyState"
            if name in judging and module.startswith("tokentop.ui"):
                found.append(f"{module}: {name}()")
    assert found == [] and made == 1  # the one place is seen, so the search works
