"""Tables as Markdown-style pipe tables: the header row, a separator row, then one line per row.

The chunker relies on this shape to repeat the header when it splits a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from knowledge.extraction.blocks import BlockCollector

ROWS_PER_BLOCK = 40


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """The rows as a pipe table; the first row is the header. Ragged rows are padded with empty cells."""
    rows = [[_text(value).replace("|", "\\|") for value in row] for row in rows]
    width = max((len(row) for row in rows), default=0)
    if not width:
        return ""
    lines = [_line(row, width) for row in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


def add_row_tables(
    rows: Iterable[Sequence[str]], sink: BlockCollector, *, page: int | None = None, heading: str = ""
) -> None:
    """Add spreadsheet-like rows as table blocks of at most 40 data rows, each starting with the header row.

    The first non-empty row is the header; empty rows and trailing empty cells are dropped. `heading`, if
    given, is added (level 1) before the first table, so a source without rows adds nothing at all.
    """
    header: list[str] | None = None
    emitted = False
    batch: list[list[str]] = []
    for row in rows:
        cells = _trim(row)
        if not cells:
            continue
        if header is None:
            header = cells
            if heading:
                sink.add("heading", heading, level=1, page=page)
            continue
        batch.append(cells)
        if len(batch) == ROWS_PER_BLOCK:
            sink.add("table", render_table([header, *batch]), page=page)
            batch, emitted = [], True
    if header is not None and (batch or not emitted):
        sink.add("table", render_table([header, *batch]), page=page)


def _trim(row: Sequence[str]) -> list[str]:
    cells = [_text(value) for value in row]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def _text(value: str) -> str:
    return " ".join(value.split())


def _line(row: list[str], width: int) -> str:
    return "| " + " | ".join(row + [""] * (width - len(row))) + " |"
