"""`make bench-chat`: N concurrent chats over websockets against the whole platform.

Starts (or reuses) the embedded PostgreSQL and Redis, a tenant `bench`, the web server as the Procfile runs
it (uvicorn, two processes), a real Celery worker, and a local fake model (OpenAI-compatible HTTP/SSE) with
a fixed first-token delay and token gap. Each client logs in (session cookie), opens
`/ws/chat/<conversation>/`, sends a message and reads until `message_done`.

Reported: the time to first token *added by the platform* (client-measured first `text_delta` minus the
same model's first token when called directly) at p50 and p99, delivered events per second, and lost,
duplicated and misrouted events (checked against each run's stored event stream). Last line: JSON.

    python bench/chat.py [--concurrency 50] [--tokens 40] [--token-gap 0.05] [--first-token 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import (  # noqa: E402
    celery_worker,
    cpu_check_us,
    free_port,
    percentile,
    setup_django,
    stop_all,
    web_server,
)

WARM_UP = 8  # chats before the measured ones


def prepare(concurrency: int, model_url: str) -> tuple[list[str], str]:
    """Tenant, user, agent and one conversation per client. Returns conversation ids and a session key."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from agents.models import Agent, ModelProvider
    from agents.services.agents import agent_publish
    from agents.services.providers import provider_save
    from conversations.models import Conversation
    from conversations.services import conversation_start
    from tenants.models import Tenant
    from tenants.services import platform_tenant_ensure, tenant_create

    call_command("migrate_schemas", "--noinput", verbosity=0)
    platform_tenant_ensure()
    tenant = Tenant.objects.filter(schema_name="bench").first() or tenant_create(
        slug="bench", name="Bench", owner_email="bench@bench.test", owner_password="Bench-Password-123"
    )
    with tenant_context(tenant):
        user = User.objects.get(email="bench@bench.test")
        Conversation.objects.filter(user=user).delete()
        provider = ModelProvider.objects.filter(name="Bench model").first() or ModelProvider(name="Bench model")
        provider.base_url, provider.model_name, provider.kind = model_url, "fake", "chat"
        provider.max_concurrency = 10_000
        provider_save(provider=provider, api_key="")
        agent, _ = Agent.objects.get_or_create(slug="bench", defaults={"name": "Bench", "mode": "chat"})
        agent.chat_provider, agent.mode = provider, "chat"
        agent.save()
        agent_publish(agent=agent)
        # and some for the warm-up chats, which are not measured
        conversations = [str(conversation_start(user=user, agent=agent).pk) for _ in range(concurrency + WARM_UP)]
        store = SessionStore()
        store[SESSION_KEY], store[BACKEND_SESSION_KEY] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        return conversations, store.session_key


def direct_ttft(base_url: str, samples: int = 10) -> float:
    """The fake model's own first-token time, called directly with the OpenAI client."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="x")
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        stream = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                times.append(time.perf_counter() - started)
                break
        stream.close()
    return statistics.median(times)


async def client(port: int, conversation_id: str, session: str, results: list, timeout: float) -> None:
    try:
        await _client(port, conversation_id, session, results, timeout)
    except Exception as exc:  # counted and reported; one failed client does not stop the others
        results.append({"run_id": None, "ttft": None, "events": [], "marks": {}, "error": f"{type(exc).__name__}"})


async def _client(port: int, conversation_id: str, session: str, results: list, timeout: float) -> None:
    import websockets

    uri = f"ws://bench.localhost:{port}/ws/chat/{conversation_id}/"
    headers = {"Cookie": f"nexent_session={session}"}
    async with websockets.connect(
        uri,
        host="127.0.0.1",
        port=port,
        origin=f"http://bench.localhost:{port}",
        additional_headers=headers,
        max_size=2**22,
        open_timeout=60,
    ) as ws:
        started, sent_at = time.perf_counter(), time.time()
        await ws.send(json.dumps({"type": "send", "content": "benchmark question"}))
        first_token, run_id, events, marks = None, None, [], {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=timeout))
            if frame["type"] == "message_created":
                run_id = frame["run_id"]
                marks["created"] = time.time() - sent_at
            elif frame["type"] == "run_started":
                marks["worker_started"] = frame["ts"] - sent_at
            elif frame["type"] == "step_started" and "model_called" not in marks:
                marks["model_called"] = frame["ts"] - sent_at
            elif frame["type"] == "text_delta" and first_token is None:
                first_token = time.perf_counter() - started
                marks["token_published"] = frame["ts"] - sent_at
                marks["token_received"] = time.time() - sent_at
            if "seq" in frame:
                events.append(frame)
            if frame["type"] == "message_done":
                break
        results.append({"run_id": run_id, "ttft": first_token, "events": events, "marks": marks})


def check(results: list) -> tuple[int, int, int, int]:
    """Against each run's stored stream: (delivered, lost, duplicated, misrouted)."""
    from agents.runtime.streams import run_events_since

    delivered = lost = duplicated = misrouted = 0
    for result in results:
        if result["run_id"] is None:
            continue
        expected = {e["seq"] for e in run_events_since("bench", result["run_id"])}
        mine = [e for e in result["events"] if e["run_id"] == result["run_id"]]
        misrouted += len(result["events"]) - len(mine)
        seqs = [e["seq"] for e in mine]
        delivered += len(mine)
        duplicated += len(seqs) - len(set(seqs))
        lost += len(expected - set(seqs))
    return delivered, lost, duplicated, misrouted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-gap", type=float, default=0.05)
    parser.add_argument("--first-token", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (default 1, as the Procfile)")
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=0,
        help="default: the concurrency (at least 16, the Procfile's default; at most 200)",
    )
    args = parser.parse_args()

    from nexent_site.devstack import start_services, wait_for_port

    services = start_services(redis_db=2)
    processes: list[subprocess.Popen] = []
    fake = None
    try:
        setup_django()
        from nexent_site.testing.fake_openai import FakeOpenAI, Reply

        fake = FakeOpenAI(token_gap_s=args.token_gap).start()
        answer = " ".join(f"tok{i}" for i in range(args.tokens))
        reply = Reply(content=answer, delay_s=args.first_token)
        fake.next_reply = lambda body: reply  # every request streams the same answer
        baseline = direct_ttft(fake.base_url)

        conversations, session = prepare(args.concurrency, fake.base_url)
        port, queue = free_port(), f"bench-{os.getpid()}"
        env = dict(os.environ, CELERY_QUEUE=queue, NEXENT_PORT=str(port))
        threads = args.worker_threads or min(max(args.concurrency, 16), 200)  # 16: the Procfile's default
        pool = os.environ.get("BENCH_POOL", "threads")
        processes.append(web_server(port=port, env=env))
        for _ in range(args.workers):  # thread-pool processes share the threads; each has a GIL of its own
            processes.append(
                celery_worker(queue=queue, pool=pool, concurrency=max(threads // args.workers, 1), env=env)
            )
        wait_for_port(port, 90, "the web server")
        time.sleep(3)  # the worker starts
        print(
            f"nexent bench-chat: {args.concurrency} concurrent chats, {args.tokens} tokens each, "
            f"first token {args.first_token * 1000:.0f} ms, token gap {args.token_gap * 1000:.0f} ms, "
            f"worker threads {threads} in {args.workers} process(es)"
        )
        print(f"model called directly: first token after {baseline * 1000:.1f} ms (median)")
        cpu_before = cpu_check_us()
        print(f"CPU check: sum(range(1000)) in {cpu_before:.1f} µs (lower is faster; 8.9 µs on a fast run)")
        results: list = []

        timeout = 60 + args.first_token + args.tokens * args.token_gap * 4
        warm_up, conversations = conversations[:WARM_UP], conversations[WARM_UP:]

        async def warm() -> None:  # pairs of chats, so that both web processes serve some before measuring
            for index in range(0, WARM_UP, 2):
                await asyncio.gather(*(client(port, c, session, [], timeout) for c in warm_up[index : index + 2]))

        asyncio.run(warm())

        async def run_all() -> float:
            started = time.perf_counter()
            await asyncio.gather(*(client(port, c, session, results, timeout) for c in conversations))
            return time.perf_counter() - started

        wall = asyncio.run(run_all())
        added = [(r["ttft"] - baseline) * 1000 for r in results if r["ttft"] is not None]
        failed = [r["error"] for r in results if r.get("error")]
        delivered, lost, duplicated, misrouted = check(results)
        figures = {
            "concurrency": args.concurrency,
            "added_ttft_p50_ms": round(percentile(added, 0.5), 1) if added else None,
            "added_ttft_p99_ms": round(percentile(added, 0.99), 1) if added else None,
            "events_per_s": round(delivered / wall, 1),
            "lost_events": lost,
            "duplicated_events": duplicated,
            "misrouted_events": misrouted,
            "failed_clients": len(failed),
            "cpu_check_us": round(cpu_before, 1),
        }
        print(
            f"chats completed: {len(results) - len(failed)}/{args.concurrency} in {wall:.1f} s; "
            f"without a first token: {args.concurrency - len(added)}"
        )
        if failed:
            print(f"clients that failed: {len(failed)} ({', '.join(sorted(set(failed)))})")
        print(
            f"time to first token added by the platform: p50 {figures['added_ttft_p50_ms']} ms, "
            f"p99 {figures['added_ttft_p99_ms']} ms"
        )
        for mark, label in (
            ("created", "message saved, run enqueued (web)"),
            ("worker_started", "run started (worker)"),
            ("model_called", "model called (worker)"),
            ("token_published", "first token published (worker)"),
            ("token_received", "first token received (client)"),
        ):
            values = [r["marks"][mark] * 1000 for r in results if mark in r["marks"]]
            if values:
                print(f"  {label}: p50 {percentile(values, 0.5):.1f} ms after sending")
        print(
            f"events delivered: {delivered} ({figures['events_per_s']}/s); lost {lost}, duplicated {duplicated}, "
            f"misrouted {misrouted}"
        )
        print(json.dumps(figures))
    finally:
        stop_all(processes)
        if fake is not None:
            fake.stop()
        services.stop()


if __name__ == "__main__":
    main()
