"""A local stand-in for ClamAV's clamd (an external daemon whose signatures cannot be fetched here),
speaking clamd's real INSTREAM protocol over TCP: `zINSTREAM\\0`, then chunks each prefixed by a 4-byte
big-endian length, then a zero length; the answer is `stream: OK\\0` or `stream: <signature> FOUND\\0`.
It flags the standard EICAR test string, as real ClamAV does, and can be told to answer an error."""

from __future__ import annotations

import socketserver
import struct
import threading

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            part = self.request.recv(size - len(data))
            if not part:
                raise ConnectionError("client went away")
            data += part
        return data

    def handle(self) -> None:
        command = b""
        while not command.endswith(b"\0"):
            command += self._read(1)
        if command != b"zINSTREAM\0":
            self.request.sendall(b"UNKNOWN COMMAND\0")
            return
        body = b""
        while size := struct.unpack("!L", self._read(4))[0]:
            body += self._read(size)
        self.server.scanned += 1
        if self.server.answer_error:
            self.request.sendall(b"INSTREAM size limit exceeded. ERROR\0")
        elif EICAR in body:
            self.request.sendall(b"stream: Win.Test.EICAR_HDB-1 FOUND\0")
        else:
            self.request.sendall(b"stream: OK\0")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    scanned = 0
    answer_error = False


class FakeClamd:
    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.server.serve_forever, name="fake-clamd", daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
