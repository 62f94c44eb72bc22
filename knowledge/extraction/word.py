"""Word documents (DOCX) with python-docx, in body order."""

from __future__ import annotations

import io
import re

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from knowledge.extraction.blocks import BlockCollector
from knowledge.extraction.safety import check_office_package
from knowledge.extraction.tables import render_table

_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)


def read_docx(data: bytes, sink: BlockCollector) -> None:
    """Headings (styles "Title" and "Heading N"), paragraphs, list items and tables, in body order.

    Consecutive list items make one list block. Headers, footers, footnotes, comments, text boxes,
    content controls and tables nested in cells (their text joins the cell's) are not read.
    """
    check_office_package(data, label="Word document")
    document = docx.Document(io.BytesIO(data))
    # Looking a style up by id walks all styles; do it once per document, not once per paragraph.
    style_names = {style.style_id: style.name or "" for style in document.styles}
    items: list[str] = []
    for content in document.iter_inner_content():
        if isinstance(content, Table):
            _flush_list(items, sink)
            sink.add("table", render_table([[cell.text for cell in row.cells] for row in content.rows]))
            continue
        style = style_names.get(content._p.style or "", "")
        level = _heading_level(style)
        indent = None if level else _list_indent(content, style)
        if indent is not None:
            if content.text.strip():
                items.append("  " * indent + "- " + content.text.strip())
            continue
        _flush_list(items, sink)
        sink.add("heading" if level else "paragraph", content.text, level=level)
    _flush_list(items, sink)


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = _HEADING_STYLE.match(style)
    return min(int(match.group(1)), 6) if match else 0


def _list_indent(paragraph: Paragraph, style: str) -> int | None:
    """The nesting level of a list item, or None for a paragraph that is not one."""
    properties = paragraph._p.pPr
    numbering = properties.numPr if properties is not None else None
    if numbering is not None:
        return numbering.ilvl.val if numbering.ilvl is not None else 0
    return 0 if style.startswith("List") else None


def _flush_list(items: list[str], sink: BlockCollector) -> None:
    if items:
        sink.add("list", "\n".join(items))
        items.clear()
