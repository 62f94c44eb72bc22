"""`ASGI_THREADS` under uvicorn (nexent_site/asgi.py's `with_asgi_threads`): the event loop's default executor, where
the websocket consumers' database calls run, gets that many threads. Python's default never exceeds 32."""

import asyncio
import threading

from asgiref.sync import sync_to_async

from nexent_site.asgi import with_asgi_threads


async def _inner(scope: dict, receive: object, send: object) -> None:
    scope["served"] = True


def test_the_loops_executor_runs_asgi_threads_calls_at_once() -> None:
    # given: an application wrapped with ASGI_THREADS=40
    app = with_asgi_threads(_inner, 40)
    scope: dict = {"type": "http"}
    barrier = threading.Barrier(40, timeout=20)  # passes only when 40 threads wait on it together

    async def serve_then_call() -> None:
        await app(scope, None, None)
        # when: 40 sync calls as the consumers make them (not thread-sensitive)
        await asyncio.gather(*(sync_to_async(barrier.wait, thread_sensitive=False)() for _ in range(40)))

    # then: they ran at once (with Python's default, at most 32 threads, the barrier would time out)
    asyncio.run(serve_then_call())
    assert scope["served"]


def test_without_asgi_threads_the_application_is_left_as_it_is() -> None:
    assert with_asgi_threads(_inner, 0) is _inner
