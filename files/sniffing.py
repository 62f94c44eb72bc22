"""What a file really is, from its bytes (the client's content type and name are not trusted)."""

from __future__ import annotations

import json

import filetype

# Compound File Binary: legacy .doc/.xls/.ppt, and what Office writes for a password-protected .docx/.xlsx/.pptx.
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
OLE2_TYPE = "application/x-ole-storage"

TEXT_TYPES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".json": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
}


def sniff_content_type(head: bytes, name: str) -> str:
    """The MIME type detected from the first bytes; text formats are told apart by content and extension.
    `application/octet-stream` when the bytes are neither a known format nor text."""
    detected = filetype.guess_mime(head)
    if detected:
        return detected
    if head.startswith(OLE2_MAGIC):
        return OLE2_TYPE
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the sample
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "application/octet-stream"
    if "\x00" in text:
        return "application/octet-stream"
    suffix = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
    stripped = text.lstrip()
    if suffix == ".json" or stripped[:1] in "[{":
        try:
            json.loads(text)
            return "application/json"
        except ValueError:
            if suffix == ".json" and len(head) >= 65536:
                return "application/json"  # only a sample of a long file was read
    if stripped[:15].lower().startswith(("<!doctype html", "<html")):
        return "text/html"
    return TEXT_TYPES.get(suffix, "text/plain")
