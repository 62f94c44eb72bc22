"""Virus scanning of uploads with ClamAV's clamd, when CLAMAV_URL is set (`tcp://host:3310` or
`unix:///path/to/clamd.sock`). The bytes are streamed with clamd's INSTREAM command. Fail closed: an
infected file is refused, and so is every file the scanner could not check."""

from __future__ import annotations

import socket
import struct
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

from nexent_site.errors import ApplicationError

CHUNK = 64 * 1024


def _connect() -> socket.socket:
    url = urlparse(settings.CLAMAV_URL)
    if url.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(settings.CLAMAV_TIMEOUT_S)
        sock.connect(url.path)
        return sock
    return socket.create_connection((url.hostname or "127.0.0.1", url.port or 3310), settings.CLAMAV_TIMEOUT_S)


def _reply(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\0"):
        part = sock.recv(4096)
        if not part:
            break
        data += part
    return data.rstrip(b"\0").decode("utf-8", "replace").strip()


def scan_upload(upload: Any, name: str) -> None:
    """Raise ApplicationError unless clamd says the file is clean: `infected` (with the signature's name)
    or `scan_failed` (scanner unreachable, timed out, or answering an error)."""
    try:
        with _connect() as sock:
            sock.sendall(b"zINSTREAM\0")
            upload.seek(0)
            for chunk in iter(lambda: upload.read(CHUNK), b""):
                sock.sendall(struct.pack("!L", len(chunk)) + chunk)
            sock.sendall(struct.pack("!L", 0))
            answer = _reply(sock)
    except OSError as exc:
        raise ApplicationError(
            f"The virus scanner could not check “{name}” ({type(exc).__name__}); nothing was stored.",
            code="scan_failed",
            status=503,
        ) from None
    finally:
        upload.seek(0)
    if answer.endswith("FOUND"):
        signature = answer.removeprefix("stream:").removesuffix("FOUND").strip()
        raise ApplicationError(f"“{name}” contains a virus ({signature}) and was refused.", code="infected", status=422)
    if answer != "stream: OK":
        raise ApplicationError(
            f"The virus scanner could not check “{name}” ({answer or 'no answer'}); nothing was stored.",
            code="scan_failed",
            status=503,
        )
