"""Plain text and JSON, and the decoding every text format shares."""

from __future__ import annotations

import codecs
import json
import re

from knowledge.extraction.blocks import BlockCollector

_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n")


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM or not), UTF-16 when it starts with a BOM, else Latin-1, which never fails.

    Legacy encodings such as GBK therefore come out as Latin-1 gibberish rather than an error.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_plain(data: bytes, sink: BlockCollector) -> None:
    """One paragraph per run of lines between blank lines."""
    for paragraph in _BLANK_LINES.split(normalize_newlines(decode_text(data))):
        sink.add("paragraph", paragraph)


def read_json(data: bytes, sink: BlockCollector) -> None:
    """Pretty-printed, one code block per top-level key (object) or element (array)."""
    value = json.loads(decode_text(data))
    if isinstance(value, dict):
        for key, item in value.items():
            sink.add("code", f"{json.dumps(key, ensure_ascii=False)}: {_pretty(item)}")
    elif isinstance(value, list):
        for item in value:
            sink.add("code", _pretty(item))
    else:
        sink.add("code", _pretty(value))


def _pretty(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
