"""The framework-free core imports with torch and mxnet blocked, and backends load lazily by name."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Every module of the framework-free layers (core, run, applications) and the entry points: they must
# import with the deep-learning frameworks blocked. Backends are the only place a framework is imported.
FRAMEWORK_FREE = ("core", "run", "apps")
CORE_MODULES = ["bench", "bench.run_squad", "bench.evaluate", "bench.cli"] + sorted(
    ".".join(("bench",) + p.relative_to(REPO / "bench").with_suffix("").parts).removesuffix(".__init__")
    for layer in FRAMEWORK_FREE for p in (REPO / "bench" / layer).rglob("*.py")
    if p.stem != "__main__")          # a __main__ module runs its command when imported

BLOCKED_IMPORT = """
import sys
for name in ("torch", "mxnet", "gluonnlp", "transformers"):
    sys.modules[name] = None          # any import of these now raises ImportError
import importlib
for module in {modules!r}:
    importlib.import_module(module)
print("ok")
"""


def test_core_modules_import_without_any_framework():
    code = BLOCKED_IMPORT.format(modules=CORE_MODULES)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_every_layer_has_modules():
    """The glob above really finds the layers (a moved folder must not empty the check)."""
    for layer in FRAMEWORK_FREE:
        assert any(m.startswith(f"bench.{layer}.") for m in CORE_MODULES), layer
    assert not list((REPO / "bench").glob("*_backend")), "backends live under bench/backends/"


def test_scoring_cli_runs_with_frameworks_blocked(squad_dir, tmp_path):
    import json
    import gzip
    data = json.load(gzip.open(squad_dir / "xquad.en.json.gz", "rt", encoding="utf-8"))
    preds = {qa["id"]: qa["answers"][0]["text"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(preds))
    code = ("import sys; sys.modules['torch'] = None; sys.modules['mxnet'] = None; "
            "from bench.apps.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "evaluate", str(squad_dir / "xquad.en.json.gz"),
                           str(pred_file)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"exact_match": 100.0, "f1": 100.0}


def test_missing_backend_fails_loudly_with_install_hint(monkeypatch):
    import importlib.util

    from bench.run.registry import BackendUnavailable, get_backend
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mxnet" else real_find_spec(name, *a))
    with pytest.raises(BackendUnavailable, match="install_mxnet|pip install"):
        get_backend("mxnet")
    with pytest.raises(BackendUnavailable, match="unknown --backend"):
        get_backend("jax")
