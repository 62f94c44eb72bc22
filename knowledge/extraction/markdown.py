"""Markdown, line by line: the block structure matters for chunking, inline markup is kept as written."""

from __future__ import annotations

import re

from knowledge.extraction.blocks import BlockCollector
from knowledge.extraction.tables import render_table
from knowledge.extraction.text import decode_text, normalize_newlines

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


def read_markdown(data: bytes, sink: BlockCollector) -> None:
    """ATX and setext headings, fenced code (kept whole, fences dropped), pipe tables, lists and paragraphs.

    Indented code, HTML blocks, block quotes and front matter are read as paragraphs.
    """
    _Parser(normalize_newlines(decode_text(data)).split("\n"), sink).run()


class _Parser:
    def __init__(self, lines: list[str], sink: BlockCollector) -> None:
        self.lines = lines
        self.sink = sink
        self.paragraph: list[str] = []
        self.items: list[str] = []

    def run(self) -> None:
        index = 0
        while index < len(self.lines):
            index = self._step(index)
        self._flush()

    def _step(self, index: int) -> int:
        """Consume the construct starting at `index`; return the index of the next unread line."""
        line = self.lines[index]
        if fence := _FENCE.match(line):
            return self._code(index, fence.group(1))
        if heading := _ATX.match(line):
            self._flush()
            self.sink.add("heading", heading.group(2) or "", level=len(heading.group(1)))
        elif not line.strip():
            if not (self.items and self._item_continues(index + 1)):
                self._flush()
        elif self.paragraph and not self.items and (underline := _SETEXT.match(line)):
            text, self.paragraph = " ".join(part.strip() for part in self.paragraph), []
            self.sink.add("heading", text, level=1 if underline.group(1)[0] == "=" else 2)
        elif _RULE.match(line):
            self._flush()
        elif "|" in line and index + 1 < len(self.lines) and self._is_delimiter(self.lines[index + 1]):
            return self._table(index)
        elif self.items or _ITEM.match(line):
            # While a list is open, any non-blank line is an item or continues one (lazy continuation).
            self._flush_paragraph()
            self.items.append(line)
        else:
            self.paragraph.append(line)
        return index + 1

    def _code(self, index: int, fence: str) -> int:
        self._flush()
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = index + 1
        while end < len(self.lines) and not closing.match(self.lines[end]):
            end += 1
        self.sink.add("code", "\n".join(self.lines[index + 1 : end]))
        return end + 1

    def _table(self, index: int) -> int:
        self._flush()
        rows = [_cells(self.lines[index])]
        end = index + 2
        while end < len(self.lines) and "|" in self.lines[end] and self.lines[end].strip():
            rows.append(_cells(self.lines[end]))
            end += 1
        self.sink.add("table", render_table(rows))
        return end

    def _is_delimiter(self, line: str) -> bool:
        return "|" in line and "-" in line and bool(_TABLE_DELIMITER.match(line))

    def _item_continues(self, index: int) -> bool:
        """A blank line inside a loose list: the next non-blank line is another item or indented."""
        while index < len(self.lines) and not self.lines[index].strip():
            index += 1
        return index < len(self.lines) and bool(_ITEM.match(self.lines[index]) or self.lines[index][0] in " \t")

    def _flush_paragraph(self) -> None:
        if self.paragraph:
            self.sink.add("paragraph", "\n".join(self.paragraph))
            self.paragraph = []

    def _flush(self) -> None:
        self._flush_paragraph()
        if self.items:
            self.sink.add("list", "\n".join(self.items))
            self.items = []


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line.removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.replace("\\|", "|") for cell in _CELL_SEPARATOR.split(line)]
