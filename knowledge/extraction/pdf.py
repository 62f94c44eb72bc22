"""PDF text, page by page, with pypdf."""

from __future__ import annotations

import io
import re

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from knowledge.extraction.blocks import BlockCollector, ExtractionError, corrupt

_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n")


def read_pdf(data: bytes, sink: BlockCollector) -> int:
    """One paragraph block per blank-line-separated run of each page's text lines; returns the page count.

    Only the text layer is read: scanned pages, images, annotations and form fields give nothing, and
    there are no headings (PDFs carry no reliable structure without tagging).
    """
    reader = PdfReader(io.BytesIO(data))
    encrypted = reader.is_encrypted
    if encrypted and not _opens_without_password(reader):
        raise _encrypted()
    before = len(sink.blocks)
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text()
        except Exception as exc:
            raise corrupt(f"Page {number} of the PDF", exc) from exc
        for paragraph in _BLANK_LINES.split(text):
            sink.add("paragraph", paragraph, page=number)
    if encrypted and len(sink.blocks) == before:
        # It opened with an empty password but gave no text: we cannot tell a scan from a failed decryption.
        raise _encrypted()
    return len(reader.pages)


def _opens_without_password(reader: PdfReader) -> bool:
    try:
        return reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except DependencyError:
        return False


def _encrypted() -> ExtractionError:
    return ExtractionError("The PDF is password-protected; upload it without a password.", code="encrypted")
