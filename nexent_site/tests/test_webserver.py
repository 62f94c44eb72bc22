"""The web server with several processes (nexent_site/webserver.py), started as the Procfile starts it: each process
listens on a socket of its own, so connections opened together are spread over the processes instead of going
mostly to one (uvicorn's shared socket put 45 of 50 chats on one of two processes in the chat benchmark)."""

import os
import socket
import time

import psutil
import pytest

from conftest import asgi_process
from nexent_site.webserver import listening_socket, supervisor_socket


def _listening_sockets(pid: int, port: int) -> set[int]:
    """The inodes of the sockets process `pid` listens on `port` with."""
    listening = psutil.Process(pid).net_connections(kind="tcp")
    fds = [c.fd for c in listening if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    return {os.stat(f"/proc/{pid}/fd/{fd}").st_ino for fd in fds}


def _server_processes(supervisor: psutil.Process) -> list[int]:
    """The supervisor's server processes (not multiprocessing's resource tracker)."""
    return [child.pid for child in supervisor.children() if "spawn_main" in " ".join(child.cmdline())]


def _accepted(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    )


def _wait(condition, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_each_web_process_listens_on_its_own_socket_and_takes_a_share_of_connections_opened_together(
    celery_worker: dict,
) -> None:
    with asgi_process(celery_worker["queue"], workers=2) as server:
        port = server["port"]
        supervisor = psutil.Process(server["process"].pid)
        pids = _wait(lambda: len(found := _server_processes(supervisor)) == 2 and found, 30, "two processes")
        sockets = _wait(
            lambda: (found := [_listening_sockets(pid, port) for pid in pids]) and all(found) and found,
            60,
            "both processes listening",
        )
        # given: each process listens on a socket of its own (with uvicorn's shared one, the same socket in both)
        assert len(sockets[0] | sockets[1]) == 2, sockets
        # and the supervisor listens on none: a connection queued on it would never be answered
        assert not _listening_sockets(supervisor.pid, port)

        # when: 40 connections are opened at once, as a page's websockets reconnect after a restart
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        try:
            # then: every one is taken by a process, and each process has a fair share of them (spread by the
            # kernel: fewer than 8 of 40 on either would happen about once in 50,000 runs)
            counts = _wait(
                lambda: (found := [_accepted(pid, port) for pid in pids]) and sum(found) == 40 and found,
                30,
                "the processes to accept every connection",
            )
            assert min(counts) >= 8, counts
        finally:
            for client in clients:
                client.close()


def test_a_port_in_use_is_refused_even_when_its_holder_shares_it() -> None:
    # given: a process of a server of this kind listens on a port (its socket shares the port)
    holder = listening_socket("127.0.0.1", 0)
    holder.listen()
    try:
        port = holder.getsockname()[1]
        # when / then: a second one on the same port fails at once, as with uvicorn's own socket
        with pytest.raises(OSError):
            supervisor_socket("127.0.0.1", port)
    finally:
        holder.close()
