"""HTML pages with BeautifulSoup and the standard library's parser."""

from __future__ import annotations

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString

from knowledge.extraction.blocks import BlockCollector
from knowledge.extraction.tables import render_table
from knowledge.extraction.text import decode_text

_DROPPED = ["script", "style", "nav", "footer", "noscript", "template", "head", "svg", "iframe"]
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_LISTS = {"ul", "ol"}
# Elements that end the running paragraph of loose text; anything else is treated as inline.
# fmt: off
_BREAKS = {
    "address", "article", "aside", "blockquote", "body", "center", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "form", "header", "hr", "html", "li", "main", "section", "summary",
    "td", "th", "tr",
}
# fmt: on
_BLOCKS = _HEADINGS | _LISTS | {"p", "pre", "table"}


def read_html(data: bytes, sink: BlockCollector) -> None:
    """Headings h1-h6, paragraphs, lists, pre (as code) and tables, in document order; loose text in other
    containers becomes paragraphs. Scripts, styles, navigation, footers and the head are dropped."""
    soup = BeautifulSoup(decode_text(data), "html.parser")
    for element in soup.find_all(_DROPPED):
        element.decompose()
    for line_break in soup.find_all("br"):
        line_break.replace_with("\n")
    _Walker(sink).run(soup)


class _Walker:
    def __init__(self, sink: BlockCollector) -> None:
        self.sink = sink
        self.loose: list[str] = []

    def run(self, root: Tag) -> None:
        self._walk(root)
        self._flush()

    def _walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, PreformattedString):  # comments, doctype, CDATA
                    self.loose.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _BLOCKS:
                self._flush()
                self._block(child)
            elif name in _BREAKS:
                self._flush()
                self._walk(child)
                self._flush()
            else:
                self._walk(child)

    def _block(self, element: Tag) -> None:
        name = element.name
        if name in _HEADINGS:
            self.sink.add("heading", _squash(element.get_text()), level=int(name[1]))
        elif name == "p":
            self.sink.add("paragraph", _squash(element.get_text()))
        elif name == "pre":
            self.sink.add("code", element.get_text())
        elif name == "table":
            self.sink.add("table", render_table(_table_rows(element)))
        else:
            lines = _list_lines(element, depth=0)
            if lines:
                self.sink.add("list", "\n".join(lines))
            else:
                self.sink.add("paragraph", _squash(element.get_text(" ")))

    def _flush(self) -> None:
        if self.loose:
            self.sink.add("paragraph", _squash("".join(self.loose)))
            self.loose.clear()


def _table_rows(table: Tag) -> list[list[str]]:
    # find_all also returns the rows of tables nested in cells; those belong to their cell's text.
    rows = [row for row in table.find_all("tr") if row.find_parent("table") is table]
    return [[cell.get_text(" ") for cell in row.find_all(["td", "th"], recursive=False)] for row in rows]


def _list_lines(list_element: Tag, *, depth: int) -> list[str]:
    lines: list[str] = []
    for item in list_element.find_all("li", recursive=False):
        own: list[str] = []
        nested: list[str] = []
        for child in item.children:
            if isinstance(child, Tag) and child.name in _LISTS:
                nested.extend(_list_lines(child, depth=depth + 1))
            elif isinstance(child, Tag):
                own.append(child.get_text(" "))
            elif isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
                own.append(str(child))
        text = _squash("".join(own))
        if text:
            lines.append("  " * depth + "- " + text)
        lines.extend(nested)
    return lines


def _squash(text: str) -> str:
    return " ".join(text.split())
