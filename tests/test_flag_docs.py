"""docs/flags.md is the flag table in code (bench.core.flags.FLAGS), rendered: no drift.

Regenerate it with ``squad-bench flag-docs`` after changing a flag.
"""
from __future__ import annotations

from pathlib import Path

from bench.apps import cli, flag_docs
from bench.core.flags import FLAGS

REPO = Path(__file__).resolve().parent.parent
FLAGS_DOC = REPO / "docs" / "flags.md"


def _table_rows(text: str) -> dict[str, list[str]]:
    """Flag name -> the cells of its row (flag, type, default, choices, GluonNLP, meaning)."""
    rows = {}
    for line in text.splitlines():
        if not line.startswith("| `--"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows[cells[0].strip("`").removeprefix("--")] = cells
    return rows


def test_docs_flags_md_is_the_rendered_flag_table():
    assert FLAGS_DOC.read_text(encoding="utf-8") == flag_docs.render_flags_markdown(), (
        "docs/flags.md is stale: regenerate it with `squad-bench flag-docs`")


def test_check_mode_passes_on_the_committed_file():
    assert flag_docs.main(["--check"]) == 0


def test_every_flag_has_one_row_with_its_default_and_help():
    rows = _table_rows(flag_docs.render_flags_markdown())
    assert list(rows) == [flag.name for flag in FLAGS]
    for flag in FLAGS:
        cells = rows[flag.name]
        assert len(cells) == 6, cells
        if flag.store_true:
            assert cells[1:3] == ["switch", "off"]
        elif flag.default is None:
            assert cells[2] == "none"
        else:
            assert str(flag.default) in cells[2] or repr(flag.default) in cells[2], (flag.name, cells[2])
        for choice in flag.choices or ():
            assert f"`{choice}`" in cells[3], (flag.name, choice)
        assert cells[5], f"--{flag.name} has no help text"


def test_gluon_flags_are_marked_and_additions_are_not():
    rows = _table_rows(flag_docs.render_flags_markdown())
    for flag in FLAGS:
        expected = flag_docs.GLUON_MARK if flag.gluon else flag_docs.ADDED_MARK
        assert rows[flag.name][4] == expected, f"--{flag.name}: gluon={flag.gluon}"
    assert any(flag.gluon for flag in FLAGS) and not all(flag.gluon for flag in FLAGS)


def test_rendering_is_deterministic_and_table_safe():
    first = flag_docs.render_flags_markdown()
    assert first == flag_docs.render_flags_markdown()
    for line in first.splitlines():
        if line.startswith("| `--"):
            # Column breaks inside a cell are escaped: every row has exactly the header's 6 cells.
            assert line.replace("\\|", "").count("|") == 7, line


def test_write_and_check_modes(tmp_path, capsys):
    out = tmp_path / "docs" / "flags.md"
    assert flag_docs.main(["--check", "--out", str(out)]) == 1            # missing
    assert flag_docs.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == flag_docs.render_flags_markdown()
    assert flag_docs.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("| `--seed` |", "| `--sead` |"), encoding="utf-8")
    assert flag_docs.main(["--check", "--out", str(out)]) == 1
    assert "squad-bench flag-docs" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == [out]                              # atomic write: no leftovers


def test_registered_as_a_subcommand():
    assert cli.SUBCOMMANDS["flag-docs"][0] == "bench.apps.flag_docs"
