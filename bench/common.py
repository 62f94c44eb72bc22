"""What the benchmark scripts share: Django set-up, ports, percentiles, and the worker processes they start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexent_site.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_check_us() -> float:
    """How fast this machine runs Python right now: µs for `sum(range(1000))`, best of five timings. Virtual
    CPUs vary (the same two vCPUs measured 8.9 and 18 µs an hour apart); compare benchmark runs only at
    similar values."""
    import timeit

    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by each kind of process on this machine, with their child processes: the web
    server, the Celery worker, PostgreSQL, Redis, the fake model (when it runs as a process of its own, see
    `fake_model`), and this benchmark (its clients, and the fake model when it runs inside). Take two and
    subtract."""
    import psutil

    roles = {
        "web": "nexent_site.webserver",
        "worker": "celery",
        "postgres": "postgres",
        "redis": "redis",
        "model": "nexent_site.testing.fake_openai",
    }
    totals = dict.fromkeys([*roles, "bench"], 0.0)
    counted: set[int] = set()
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [process.info["name"] or ""])
        role = "bench" if process.info["pid"] == os.getpid() else None
        role = role or next((role for role, word in roles.items() if word in command), None)
        if role is None or process.info["pid"] in counted:
            continue
        family = [process] if role == "bench" else [process, *process.children(recursive=True)]
        for member in family:
            if member.pid in counted:
                continue
            counted.add(member.pid)
            try:
                times = member.cpu_times()
            except psutil.Error:
                continue
            totals[role] += times.user + times.system
    return totals


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def celery_worker(*, queue: str, pool: str, concurrency: int, env: dict[str, str], nice: int = 0) -> subprocess.Popen:
    """A real Celery worker consuming `queue` (a comma-separated list of queues), quiet; at CPU priority `nice`."""
    command = [sys.executable, "-m", "celery", "-A", "nexent_site", "worker", "--pool", pool]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    command += ["--concurrency", str(concurrency), "--queues", queue, "--loglevel", "WARNING"]
    command += ["--without-mingle", "--without-gossip"]
    return subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def background_worker(*, queue: str, env: dict[str, str]) -> subprocess.Popen:
    """The worker of the background queue of chat queue `queue`, as the Procfile's `background` runs it
    (a pool of 4 threads, at a lower CPU priority; see nexent_site/task_routes.py)."""
    from nexent_site.task_routes import background_queue_for

    return celery_worker(queue=background_queue_for(queue), pool="threads", concurrency=4, env=env, nice=10)


def web_server(*, port: int, env: dict[str, str], workers: int = 2) -> subprocess.Popen:
    """The web process as the Procfile runs it (uvicorn, HTTP + websockets), quiet."""
    from nexent_site.devstack import WEB_ENV, web_server_command

    command = [*web_server_command(port=port, workers=workers), "--log-level", "warning"]
    return subprocess.Popen(
        command, cwd=BASE_DIR, env={**WEB_ENV, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def fake_model(*, reply: str, first_token_s: float, token_gap_s: float) -> tuple[subprocess.Popen, str]:
    """The fake OpenAI-compatible model as a process of its own, answering every chat request with `reply`:
    a real provider runs elsewhere, it does not share this process's CPU time and GIL with the clients.
    Returns the process and its base URL."""
    from nexent_site.devstack import wait_for_port

    port = free_port()
    command = [sys.executable, "-m", "nexent_site.testing.fake_openai", "--port", str(port)]
    command += ["--token-gap", str(token_gap_s), "--reply", reply, "--first-token", str(first_token_s)]
    process = subprocess.Popen(command, cwd=BASE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 30, "the fake model")
    return process, f"http://127.0.0.1:{port}/v1"


def stop_all(processes: list[subprocess.Popen]) -> None:
    """TERM every process, then KILL those still running after 20 s."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
