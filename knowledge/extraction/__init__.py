"""Text extraction for knowledge-base ingestion: uploaded bytes in, structured blocks out.

    extracted = extract(data, content_type="application/pdf", name="guide.pdf")

Every failure an uploaded file can cause raises ExtractionError, whose `code` is a stable slug
("empty", "encrypted", "corrupt", "zip_bomb", "unsupported_type", "too_much_text", "no_text") and whose
message tells the uploader what is wrong.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from knowledge.extraction.blocks import Block, BlockCollector, Extracted, ExtractionError, corrupt
from knowledge.extraction.language import detect_language
from knowledge.extraction.safety import max_text_chars

__all__ = ["Block", "Extracted", "ExtractionError", "detect_language", "extract"]

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV = "text/csv"
HTML = "text/html"
MARKDOWN = "text/markdown"
PLAIN = "text/plain"
JSON = "application/json"

_LANGUAGE_SAMPLE_CHARS = 100_000


@dataclass(frozen=True)
class _Format:
    label: str  # how messages name the file: "The PDF could not be read"
    # "module.function" in this package, imported on first use: the parsers together take ~0.4 s to
    # import, which the web process (it only needs detect_language) should not pay.
    reader: str
    no_text: str = ""  # the message when the file holds no text, if better than "The <label> contains no text."

    def load(self) -> Callable[[bytes, BlockCollector], int | None]:
        """The reader: it adds the file's blocks to a collector and returns the page count of paged formats."""
        module, function = self.reader.split(".")
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)


_SCANNED_PDF = (
    "The PDF has no text layer; it is probably a scan. OCR is not supported: upload a PDF with selectable text."
)
_FORMATS = {
    PDF: _Format("PDF", "pdf.read_pdf", no_text=_SCANNED_PDF),
    DOCX: _Format("Word document", "word.read_docx"),
    PPTX: _Format("PowerPoint presentation", "slides.read_pptx"),
    XLSX: _Format("Excel workbook", "sheets.read_xlsx"),
    CSV: _Format("CSV file", "sheets.read_csv"),
    HTML: _Format("HTML page", "web.read_html"),
    MARKDOWN: _Format("Markdown file", "markdown.read_markdown"),
    PLAIN: _Format("text file", "text.read_plain"),
    JSON: _Format("JSON file", "text.read_json"),
}
_ALIASES = {
    "text/x-markdown": MARKDOWN,
    "application/xhtml+xml": HTML,
    "application/csv": CSV,
    "text/tab-separated-values": CSV,
}
# Byte sniffers report Markdown and CSV as plain text; for those the file's name is allowed to decide.
_PLAIN_TEXT_SUFFIXES = {".md": MARKDOWN, ".markdown": MARKDOWN, ".csv": CSV, ".tsv": CSV}


def extract(data: bytes, *, content_type: str, name: str) -> Extracted:
    """The file's text as blocks in reading order, with page numbers for paged formats and a language guess.

    `content_type` is the type sniffed from the bytes and decides the parser; `name` only refines
    text/plain into Markdown or CSV. Raises ExtractionError for anything the file itself gets wrong.
    """
    if not data:
        raise ExtractionError("The file is empty.", code="empty")
    file_format = _FORMATS.get(_resolve_type(content_type, name))
    if file_format is None:
        raise ExtractionError(
            f"Files of type {content_type or 'unknown'} are not supported; upload a PDF, Word (.docx), "
            "PowerPoint (.pptx), Excel (.xlsx), CSV, HTML, Markdown, plain text or JSON file.",
            code="unsupported_type",
        )
    read = file_format.load()  # outside the try: a broken install is our failure, not a damaged file
    sink = BlockCollector(max_chars=max_text_chars())
    try:
        pages = read(data, sink)
    except ExtractionError:
        raise
    except Exception as exc:  # parsers raise anything on malformed input; the uploader only needs "damaged"
        raise corrupt(f"The {file_format.label}", exc) from exc
    if not sink.blocks:
        raise ExtractionError(file_format.no_text or f"The {file_format.label} contains no text.", code="no_text")
    return Extracted(blocks=sink.blocks, pages=pages, language=detect_language(_sample(sink.blocks)))


def _resolve_type(content_type: str, name: str) -> str:
    media_type = content_type.split(";", 1)[0].strip().lower()
    media_type = _ALIASES.get(media_type, media_type)
    if media_type == PLAIN:
        return _PLAIN_TEXT_SUFFIXES.get(PurePosixPath(name.lower()).suffix, PLAIN)
    return media_type


def _sample(blocks: list[Block]) -> str:
    parts: list[str] = []
    length = 0
    for block in blocks:
        parts.append(block.text)
        length += len(block.text)
        if length >= _LANGUAGE_SAMPLE_CHARS:
            break
    return "\n".join(parts)
