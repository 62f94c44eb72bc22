"""What extraction produces, the error it raises, and the collector every reader writes its blocks into."""

from __future__ import annotations

from dataclasses import dataclass


class ExtractionError(Exception):
    """A file we cannot turn into text; `code` is a stable slug, `message` tells the uploader what to do."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Block:
    kind: str  # "heading" | "paragraph" | "table" | "code" | "list"
    text: str
    level: int = 0  # heading level 1..6
    page: int | None = None  # 1-based page, slide or sheet number for paged formats


@dataclass
class Extracted:
    blocks: list[Block]
    pages: int | None  # PDF pages, PPTX slides, XLSX sheets; None for flowing formats
    language: str  # "zh", "en" or "" when unknown


class BlockCollector:
    """Collects blocks and stops the extraction as soon as their text passes `max_chars`.

    Readers add block by block, so a file with too much text fails early instead of after building it all.
    """

    def __init__(self, *, max_chars: int) -> None:
        self.blocks: list[Block] = []
        self.chars = 0
        self.max_chars = max_chars

    def add(self, kind: str, text: str, *, level: int = 0, page: int | None = None) -> None:
        text = _clean(text, keep_indent=kind == "code")
        if not text:
            return
        self.chars += len(text)
        if self.chars > self.max_chars:
            raise ExtractionError(
                f"The file contains more than {self.max_chars:,} characters of text; split it into smaller files.",
                code="too_much_text",
            )
        self.blocks.append(Block(kind=kind, text=text, level=level, page=page))


def _clean(text: str, *, keep_indent: bool) -> str:
    # PostgreSQL text columns reject NUL, and psycopg cannot encode lone surrogates (some PDFs produce them).
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    if keep_indent:
        return text.strip("\n").rstrip() if text.strip() else ""
    return text.strip()


def corrupt(what: str, exc: BaseException) -> ExtractionError:
    """The error for a file a parser choked on; `what` names it ("The PDF", "Page 3 of the PDF")."""
    reason = " ".join((str(exc) or type(exc).__name__).split())[:150]
    return ExtractionError(f"{what} could not be read ({reason}); the file may be damaged.", code="corrupt")
