"""Checks run on Office files before a parser opens them: password protection and zip bombs."""

from __future__ import annotations

import io
import zipfile

from django.conf import settings

from knowledge.extraction.blocks import ExtractionError

OLE2_MAGIC = b"\xd0\xcf\x11\xe0"
MAX_MEMBERS = 10_000
MAX_RATIO = 200
# Small parts of real files (styles, shared strings) can compress past the ratio; they cannot hurt us.
RATIO_GRACE_BYTES = 1024 * 1024


def max_unzipped_bytes() -> int:
    return getattr(settings, "KNOWLEDGE_MAX_UNZIPPED_BYTES", 200 * 1024 * 1024)


def max_text_chars() -> int:
    return getattr(settings, "KNOWLEDGE_MAX_TEXT_CHARS", 20_000_000)


def check_office_package(data: bytes, *, label: str) -> None:
    """Raise ExtractionError unless `data` is a zip archive that is safe to unpack.

    Sizes come from the central directory; zipfile refuses members that inflate past their declared
    size (CRC mismatch), so a parser that later reads them cannot be tricked into unpacking more.
    """
    if data.startswith(OLE2_MAGIC):
        # Office saves a password-protected .docx/.xlsx/.pptx as an OLE2 container around the encrypted zip.
        legacy = "" if "EncryptedPackage".encode("utf-16-le") in data else " (or saved in the old binary format)"
        raise ExtractionError(
            f"The {label} is password-protected{legacy}; remove the password, save it in the current Office "
            "format and upload it again.",
            code="encrypted",
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except Exception as exc:
        raise ExtractionError(
            f"The {label} could not be read: it is not a valid Office file (not a zip archive).", code="corrupt"
        ) from exc
    if len(members) > MAX_MEMBERS:
        raise _bomb(f"The {label} contains more than {MAX_MEMBERS:,} parts")
    limit = max_unzipped_bytes()
    if sum(member.file_size for member in members) > limit:
        raise _bomb(f"The {label} unpacks to more than {limit / (1024 * 1024):g} MB")
    for member in members:
        if member.file_size > RATIO_GRACE_BYTES and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise _bomb(f"The {label} contains a part compressed more than {MAX_RATIO}:1")


def _bomb(problem: str) -> ExtractionError:
    return ExtractionError(f"{problem}, which looks like a zip bomb; it was not processed.", code="zip_bomb")
