"""Which runs a live worker is executing: a short-lived Redis key per run, kept fresh by a thread of the process
that executes it, for as long as it does.

A run's task is acknowledged when it ends (acks late), so a task whose worker died is delivered again, after the
broker's visibility timeout (CELERY_VISIBILITY_TIMEOUT_S). A task that runs longer than that timeout is
delivered again too, while its worker is still on it. The key tells the two apart: a run that is "running" but
has no key lost its worker (it is closed as failed: runs are never replayed, their tools may have side effects);
a run with the key is left to the worker executing it.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from redis.exceptions import RedisError

from agents.runtime.streams import redis_client

logger = logging.getLogger(__name__)

# a dead worker's runs read as dead this long after its last refresh, at most; refreshed three times as often
ALIVE_TTL_S = settings.RUN_ALIVE_TTL_S
REFRESH_EVERY_S = ALIVE_TTL_S / 3


def run_alive_key(schema_name: str, run_id: str) -> str:
    return f"nexent:{schema_name}:run:{run_id}:alive"


class _Liveness:
    """The keys of the runs this process executes, set by one thread: at once for a new run (but off the run's
    path to its first token), then every REFRESH_EVERY_S."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._new = threading.Event()

    def start(self, key: str) -> None:
        with self._lock:
            self._keys.add(key)
            if self._thread is None or not self._thread.is_alive():  # one per process (a fork starts its own)
                self._thread = threading.Thread(target=self._refresh_forever, name="run-liveness", daemon=True)
                self._thread.start()
        self._new.set()

    def forget(self, key: str) -> None:
        """No longer refreshed (the caller deletes the key)."""
        with self._lock:
            self._keys.discard(key)

    def _refresh_forever(self) -> None:
        while True:
            self._new.wait(REFRESH_EVERY_S)
            self._new.clear()
            with self._lock:
                keys = list(self._keys)
            if not keys:
                continue
            try:
                pipe = redis_client().pipeline(transaction=False)
                for key in keys:
                    pipe.set(key, "1", px=int(ALIVE_TTL_S * 1000))
                pipe.execute()
                with self._lock:  # runs that ended meanwhile: their `stop` may have come before this refresh
                    ended = [key for key in keys if key not in self._keys]
                if ended:
                    redis_client().delete(*ended)
            except RedisError:  # tried again at the next round, well within the keys' lifetime
                logger.warning("could not refresh the liveness of %d runs", len(keys))


_liveness = _Liveness()


def run_alive_start(schema_name: str, run_id: str) -> None:
    """This process executes the run from now on: its key is kept alive until `run_alive_forget`."""
    _liveness.start(run_alive_key(schema_name, run_id))


def run_alive_forget(schema_name: str, run_id: str) -> str:
    """The run has ended here: its key is no longer kept alive. Returns the key, for the caller to delete in a
    round trip it makes anyway (the run's last events')."""
    key = run_alive_key(schema_name, run_id)
    _liveness.forget(key)
    return key


def run_is_alive(schema_name: str, run_id: str) -> bool:
    """Whether a live worker is executing the run."""
    return bool(redis_client().exists(run_alive_key(schema_name, run_id)))
