"""`python -m nexent_site.webserver`: the web server (uvicorn: HTTP and websockets), with one listening socket per
process, so that the kernel spreads connections evenly over the processes.

Why not `uvicorn --workers N`: that binds one socket in the supervisor and shares it with every process, and
whichever process wakes first takes the next connection. Connections that arrive together then go mostly to one
process. Counted in the chat benchmark (2026-12-06, two processes, 2 vCPUs): 45 of the 50 websockets of its
measured phase were on one process and 5 on the other (33 / 17 in its warm-up round). A websocket stays on the
process that accepted it for as long as the page is open, so that process relays most of the chats while the
other idles.

Here each process binds its own socket to the same address with SO_REUSEPORT (Linux 3.9 and later), and the
kernel hands each new connection to one of the listening sockets by a hash of its addresses: an even share over
any number of connections. The supervisor is uvicorn's own (`Multiprocess`: it restarts a process that dies, and
handles the signals). Its socket is bound, so a port in use fails at start, but it never listens: only the
processes' sockets take connections.

    python -m nexent_site.webserver [--host $NEXENT_BIND] [--port $NEXENT_PORT] [--workers $WEB_CONCURRENCY]
                                    [--no-proxy-headers] [--no-access-log] [--log-level info]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

APP = "nexent_site.asgi:application"
logger = logging.getLogger("uvicorn.error")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (`host`, `port`) with SO_REUSEPORT: other processes may bind the same address, and each
    that listens takes a share of the connections."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class PerProcessSocket(socket.socket):
    """The supervisor's socket. uvicorn hands its sockets to each process it starts by pickling them; this one is
    unpickled as a new socket bound to the same address (`listening_socket`) instead of a copy of the one socket."""

    def __reduce__(self) -> tuple:
        host, port = self.getsockname()[:2]
        return listening_socket, (host, port)


def supervisor_socket(host: str, port: int) -> PerProcessSocket:
    """The address, taken for this server's processes. A port in use fails here, as with uvicorn's own socket, even
    if what holds it shares its port too (another of these servers started by mistake would take half the
    connections): a socket without SO_REUSEPORT is bound first, and only then given up for the shared one."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    sock = listening_socket(host, port)
    return PerProcessSocket(sock.family, sock.type, fileno=sock.detach())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def config(args: argparse.Namespace) -> uvicorn.Config:
    """The platform's uvicorn settings: uvloop, httptools, the sans-I/O websockets (no per-message compression:
    chat events are small and many), no lifespan (Django has none)."""
    return uvicorn.Config(
        APP,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        proxy_headers=args.proxy_headers,
        access_log=args.access_log,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("NEXENT_BIND", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("NEXENT_PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    parser.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="trust X-Forwarded-Proto and -For from FORWARDED_ALLOW_IPS (uvicorn's default: on)",
    )
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=10)
    args = parser.parse_args(argv)
    server_config = config(args)
    if args.workers <= 1:
        uvicorn.Server(server_config).run()
        return
    try:
        sock = supervisor_socket(args.host, args.port)
    except OSError as exc:
        logger.error("cannot serve on %s:%s: %s", args.host, args.port, exc)
        sys.exit(STARTUP_FAILURE)
    logger.info("serving on %s:%s with %d processes, each on a socket of its own", args.host, args.port, args.workers)
    try:
        Multiprocess(server_config, sockets=[sock]).run()
    finally:
        sock.close()


if __name__ == "__main__":
    main()
