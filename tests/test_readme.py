"""README.md stays a short newcomer page whose commands and links work.

* at most 12 KiB (reference material belongs in docs/);
* it shows the exact test command CI runs (.ci/run runs the README's command as written);
* its table of contents points at headings that exist;
* every relative link in README.md and docs/*.md points at a file that exists (and, for a
  markdown file with ``#anchor``, at a heading of that file).
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MAX_README_BYTES = 12 * 1024
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)


def _markdown_files() -> list[Path]:
    return [README] + sorted((REPO / "docs").glob("*.md"))


def _prose(text: str) -> str:
    """The text without fenced code blocks, inline code and HTML comments (links there don't count)."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, duplicates numbered as GitHub does (-1, -2, ...)."""
    anchors, seen = set(), {}
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE):
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    anchors |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return anchors


def _links(path: Path) -> list[str]:
    prose = _prose(path.read_text(encoding="utf-8"))
    return LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes (at most {MAX_README_BYTES}): move material to docs/"


def test_readme_shows_the_exact_test_command_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in ci.splitlines()
                if line.strip().startswith("bash ") and "scripts/test.sh" in line]
    assert commands == ["bash scripts/test.sh"], f".ci/run no longer runs `bash scripts/test.sh`: {commands}"
    assert (REPO / "scripts" / "test.sh").is_file()
    readme_lines = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    for command in commands:
        assert command in readme_lines, f"README.md must show the test command on its own line: {command}"


def test_readme_shows_the_demo_command():
    assert "squad-bench demo" in README.read_text(encoding="utf-8")


def test_readme_table_of_contents_points_at_its_headings():
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^##\s+(?:Contents|Table of contents)\s*$(.*?)(?=^#)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md needs a '## Contents' section"
    targets = re.findall(r"\]\((#[^)]+)\)", match.group(1))
    assert len(targets) >= 5, targets
    anchors = _anchors(README)
    missing = [t for t in targets if t[1:] not in anchors]
    assert not missing, f"table-of-contents anchors without a heading: {missing}; headings: {sorted(anchors)}"


def test_docs_folder_has_the_reference_pages():
    for name in ("run-script.md", "flags.md", "distributed.md", "mxnet.md", "data-features-postprocessing.md",
                 "speed.md", "reports.md", "adding-a-model-family.md", "adding-a-head-or-loss.md"):
        assert (REPO / "docs" / name).is_file(), name


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_existing_files(path):
    broken = []
    for target in _links(path):
        if _is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = path if not file_part else (path.parent / unquote(file_part)).resolve()
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and unquote(anchor).lower() not in _anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {linked.relative_to(REPO)})")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {broken}"


def test_link_checker_sees_links():
    """The link pattern really finds links (a regex that finds none would pass every file)."""
    sample = "see [a](docs/x.md), [b `c`](../y.md#z \"t\"), ![i](img.png) and `[not](code.md)`\n[ref]: other.md\n"
    found = LINK.findall(_prose(sample)) + REFERENCE_LINK.findall(_prose(sample))
    assert found == ["docs/x.md", "../y.md#z", "img.png", "other.md"]
    assert _slug("Run on MXNet (`--backend mxnet`)") == "run-on-mxnet---backend-mxnet"
