"""Table cells, and the CSV twin (a results.csv row) of every number written into them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.apps.report.runs import Stats
from bench.core.references import Reference

__all__ = ["DASH", "Ledger", "citation_labels", "escape", "markdown_link"]

DASH = "—"


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def _csv_number(value: float) -> str:
    return repr(round(value, 4))


def _published(value: float) -> str:
    """A published number with the digits it was published with (79.3, 83.57)."""
    return repr(round(value, 4))


def markdown_link(text: str, target: str | None) -> str:
    return f"[{text}]({target})" if target else text


def escape(text: str) -> str:
    return text.replace("|", "\\|")


def citation_labels(references: list[Reference]) -> dict[str, str]:
    """A short markdown link label per citation URL: the source key, numbered when it has several."""
    by_source: dict[str, list[str]] = {}
    for ref in references:
        urls = by_source.setdefault(ref.source, [])
        if ref.citation not in urls:
            urls.append(ref.citation)
    return {url: source if len(urls) == 1 else f"{source}-{i}"
            for source, urls in by_source.items() for i, url in enumerate(urls, 1)}


@dataclass
class Ledger:
    """Collects the CSV twin of every number written into a markdown table, and the citations used."""
    out_dir: Path
    citation_labels: dict[str, str]
    rows: list[tuple] = field(default_factory=list)
    cited: set[str] = field(default_factory=set)

    def cite(self, text: str, url: str) -> str:
        """A reference-style link (keeps the wide tables readable as plain text)."""
        self.cited.add(url)
        return f"[{text}][{self.citation_labels[url]}]"

    def citation_definitions(self) -> list[str]:
        return sorted(f"[{self.citation_labels[url]}]: {url}" for url in self.cited)

    def rel(self, path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix()

    def add(self, where: tuple, quantity: str, statistic: str, value: float, n: int | str = "",
            link: str | None = None) -> None:
        self.rows.append(where + (quantity, statistic, _csv_number(value), str(n), link or ""))

    def stats_cell(self, where: tuple, quantity: str, stats: Stats | None, link: str | None) -> str:
        """'[median](link) · mean ± std' for several seeds, '[value](link)' for one, a dash for none."""
        if stats is None:
            return DASH
        if stats.n == 1:
            self.add(where, quantity, "value", stats.median, 1, link)
            return markdown_link(_fmt(stats.median), link)
        self.add(where, quantity, "median", stats.median, stats.n, link)
        self.add(where, quantity, "mean", stats.mean, stats.n, link)
        self.add(where, quantity, "std", stats.std, stats.n, link)
        return f"{markdown_link(_fmt(stats.median), link)} · {_fmt(stats.mean)} ± {_fmt(stats.std)}"

    def reference_cell(self, where: tuple, quantity: str, ref: Reference | None) -> str:
        if ref is None:
            return DASH
        self.add(where, quantity, "value", ref.value, ref.n or "", ref.citation)
        text = self.cite(_published(ref.value), ref.citation)
        if ref.std is not None:
            self.add(where, quantity, "std", ref.std, ref.n or "", ref.citation)
            text += f" ± {_published(ref.std)}" + (f" (n={ref.n})" if ref.n else "")
        return f"~~{text}~~" if ref.superseded else text

    def difference_cell(self, where: tuple, quantity: str, ours: Stats | None, ref: Reference | None) -> str:
        if ours is None or ref is None:
            return DASH
        self.add(where, quantity, "difference", ours.median - ref.value, ours.n)
        return _signed(ours.median - ref.value)
