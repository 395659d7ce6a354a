"""The layers of ``bench/`` and the one direction of imports between them (docs/architecture.md).

core -> nothing else of bench; run -> core; backends -> run, core; apps -> anything but apps
(the command dispatcher and the entry-point modules excepted). Nothing in bench/ imports
tests/ or benchmarks/. Read from the source with ``ast``, so a lazy import inside a function
counts as much as one at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
LAYERS = ("core", "run", "backends", "apps")
# What each layer may import from bench (besides itself and the package root).
ALLOWED = {"core": set(), "run": {"core"}, "backends": {"core", "run"}, "apps": {"core", "run", "backends"}}
ENTRY_POINTS = {"bench/__main__.py", "bench/cli.py", "bench/run_squad.py", "bench/evaluate.py",
                "bench/apps/cli.py"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "bench" and parts[1] in LAYERS else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            # "from bench.apps import report" imports the module bench.apps.report
            found += [f"{node.module}.{alias.name}" for alias in node.names
                      if (BENCH.parent / node.module.replace(".", "/") / alias.name).exists()
                      or (BENCH.parent / node.module.replace(".", "/") / f"{alias.name}.py").exists()]
    return found


def _sources():
    return sorted(BENCH.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(BENCH.parent)))
def test_imports_point_down_the_layers(path):
    relative = str(path.relative_to(BENCH.parent))
    own = _layer("bench." + ".".join(path.relative_to(BENCH).parts))
    for module in _imports(path):
        top = module.split(".")[0]
        assert top not in ("tests", "benchmarks"), f"{relative} imports {module}"
        if relative in ENTRY_POINTS or top != "bench":
            continue
        target = _layer(module)
        if own is None:
            continue            # bench/__init__.py
        assert target is not None or module == "bench", f"{relative}: {module} is outside the layers"
        if target is None or target == own:
            continue
        assert target in ALLOWED[own], f"{relative} ({own}) imports {module} ({target}): imports point down"


def test_nothing_imports_an_application():
    """Only the entry points do; an application that runs another goes through the dispatcher
    (``bench.apps.cli``), never by importing it."""
    for path in _sources():
        relative = str(path.relative_to(BENCH.parent))
        if relative in ENTRY_POINTS:
            continue
        imported = [m for m in _imports(path) if m.startswith("bench.apps") and m != "bench.apps"]
        if path.is_relative_to(BENCH / "apps"):
            own_package = ".".join(("bench",) + path.relative_to(BENCH).parts[:2]).removesuffix(".py")
            imported = [m for m in imported if m != "bench.apps.cli" and not m.startswith(own_package)]
        assert not imported, f"{relative} imports {imported}"


def test_core_and_run_layers_never_import_a_framework():
    """Not even lazily inside a function: a framework is the backends' (applications on top may
    import one inside a function, e.g. the speed benchmark's torch-only child tasks)."""
    frameworks = {"torch", "mxnet", "gluonnlp", "horovod"}
    for path in _sources():
        if not (path.is_relative_to(BENCH / "core") or path.is_relative_to(BENCH / "run")):
            continue
        used = {m.split(".")[0] for m in _imports(path)} & frameworks
        assert not used, f"{path.relative_to(BENCH.parent)} imports {sorted(used)}"
