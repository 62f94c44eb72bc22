"""`make bench-chat`: N concurrent chats over websockets against the whole platform.

Starts (or reuses) the embedded PostgreSQL and Redis, a tenant `bench`, the web server as the Procfile runs it
(uvicorn, two processes), a real Celery worker, and a local fake model (OpenAI-compatible HTTP/SSE) with a
fixed first-token delay and token gap. Clients log in (session cookie) and chat on `/ws/chat/<conversation>/`:
send a message, read until `message_done`.

Two load shapes, each compared with the same model called directly in the same shape:
- steady (the headline figures): N clients stay connected and chat turn after turn (`--turns`, a short pause
  of up to `--think` seconds between turns), starting at random moments within one answer's length, so that
  about N chats stream at any moment and new turns arrive among them;
- burst: N connected clients send in the same instant.

Reported per shape: the time to first token *added by the platform* (client-measured first `text_delta` minus
the model's own first token, called directly in the same shape) at p50 and p99, with where it goes; delivered
events per second; and lost, duplicated and misrouted events over every turn (checked against each run's
stored stream). Last line: JSON.

    python bench/chat.py [--concurrency 50] [--turns 4] [--think 0.2] [--tokens 40] [--token-gap 0.05]
                         [--first-token 0.2] [--workers 2] [--worker-threads N] [--turns-file turns.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import (  # noqa: E402
    background_worker,
    celery_worker,
    cpu_by_role,
    cpu_check_us,
    fake_model,
    free_port,
    percentile,
    setup_django,
    stop_all,
    web_server,
)

WARM_UP = 8  # chats in pairs before the measured ones; then one round of N concurrent chats


def prepare(count: int, model_url: str) -> tuple[list[str], str]:
    """Tenant, user, agent and `count` conversations. Returns the conversation ids and a session key."""
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
        conversations = [str(conversation_start(user=user, agent=agent).pk) for _ in range(count)]
        store = SessionStore()
        store[SESSION_KEY], store[BACKEND_SESSION_KEY] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        return conversations, store.session_key


async def direct_ttfts(base_url: str, shape: Shape) -> list[float]:
    """The fake model's own first-token times, called directly with the OpenAI client in the given shape."""
    import openai

    # connecting may wait as long as the chats' websockets may (`connect`'s open_timeout): at 500 streams on slow
    # vCPUs this process's loop took longer than the SDK's 5 s to finish some connections
    timeout = openai.Timeout(600, connect=60)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=timeout)

    async def one() -> float:
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first = None
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        return first if first is not None else float("nan")

    times: list[float] = []
    try:
        await shape.drive([None] * shape.clients, lambda _socket: one(), times.append)
    finally:
        await client.close()
    return times


class Shape:
    """How turns arrive. steady: each client waits a random part of one answer's length, then takes `turns`
    turns with a pause of up to `think` seconds after each; burst: every client's one turn at once."""

    def __init__(self, name: str, clients: int, turns: int, think: float, spread: float) -> None:
        self.name, self.clients, self.turns, self.think, self.spread = name, clients, turns, think, spread
        self.rng = random.Random(7)  # the same arrival pattern for the platform and the direct baseline

    async def drive(self, sockets: list, take_turn, record) -> None:
        if self.name == "burst":
            start = asyncio.Event()

            async def once(sock) -> None:
                await start.wait()
                record(await take_turn(sock))

            tasks = [asyncio.ensure_future(once(sock)) for sock in sockets]
            await asyncio.sleep(0.05)
            start.set()
            await asyncio.gather(*tasks)
            return
        plans = [
            (self.rng.uniform(0, self.spread), [self.rng.uniform(0, self.think) for _ in range(self.turns)])
            for _ in sockets
        ]

        async def chat(sock, offset: float, pauses: list[float]) -> None:
            await asyncio.sleep(offset)
            for pause in pauses:
                record(await take_turn(sock))
                await asyncio.sleep(pause)

        await asyncio.gather(*(chat(sock, *plan) for sock, plan in zip(sockets, plans, strict=True)))


async def connect(port: int, conversation_id: str, session: str):
    import websockets

    return await websockets.connect(
        f"ws://bench.localhost:{port}/ws/chat/{conversation_id}/",
        host="127.0.0.1",
        port=port,
        origin=f"http://bench.localhost:{port}",
        additional_headers={"Cookie": f"nexent_session={session}"},
        max_size=2**22,
        open_timeout=60,
    )


async def take_turn(ws, timeout: float) -> dict:
    """Send one message and read until the stored message comes back. Failures are counted, not raised."""
    started, sent_at = time.perf_counter(), time.time()
    first_token, run_id, events, marks = None, None, [], {}
    try:
        await ws.send(json.dumps({"type": "send", "content": "benchmark question"}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=timeout))
            if frame["type"] == "message_created":
                run_id = frame["run_id"]
                marks["created"] = time.time() - sent_at
            elif frame["type"] == "run_started":
                marks["worker_started"] = frame["ts"] - sent_at
            elif frame["type"] == "step_started" and "step_started" not in marks:
                marks["step_started"] = frame["ts"] - sent_at
            elif frame["type"] == "text_delta" and first_token is None:
                first_token = time.perf_counter() - started
                marks["token_published"] = frame["ts"] - sent_at
                marks["token_received"] = time.time() - sent_at
            elif frame["type"] == "error":
                raise RuntimeError(f"error frame {frame.get('code')}: {frame.get('message', '')[:80]}")
            if "seq" in frame:
                events.append(frame)
            if frame["type"] == "message_done":
                break
        else:
            raise TimeoutError
    except Exception as exc:  # one failed turn does not stop the others
        error = f"{type(exc).__name__} {exc}".strip()
        return {"run_id": run_id, "ttft": None, "events": events, "marks": marks, "error": error}
    return {
        "run_id": run_id,
        "ttft": first_token,
        "events": events,
        "marks": marks,
        "sent": sent_at,
        "done": time.time(),
    }


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


def write_turns(path: str, shape: str, results: list, baseline: list[float]) -> None:
    """Each turn of a shape as a JSON line: when it was sent (s after the shape's first), the time to first token
    it added, and its marks (ms after sending), to find what the slow ones had in common."""
    direct = statistics.median(t for t in baseline if t == t)
    first_sent = min((r["sent"] for r in results if "sent" in r), default=0)
    with open(path, "a") as out:
        for r in results:
            added = round((r["ttft"] - direct) * 1000, 1) if r["ttft"] is not None else None
            marks = {name: round(value * 1000, 1) for name, value in r["marks"].items()}
            sent = round(r["sent"] - first_sent, 3) if "sent" in r else None
            line = {"shape": shape, "run_id": r["run_id"], "sent_s": sent, "added_ms": added, "marks_ms": marks}
            out.write(json.dumps({**line, "error": r.get("error")}) + "\n")


def summarise(name: str, results: list, baseline: list[float], wall: float, cpu: dict[str, float]) -> dict:
    """Print one shape's figures; return them."""
    direct = statistics.median(t for t in baseline if t == t)
    added = [(r["ttft"] - direct) * 1000 for r in results if r["ttft"] is not None]
    failed = [r["error"] for r in results if r.get("error")]
    delivered, lost, duplicated, misrouted = check(results)
    finished = [r for r in results if "done" in r]
    in_flight = sum(r["done"] - r["sent"] for r in finished) / wall if finished else 0
    figures = {
        "p50": round(percentile(added, 0.5), 1) if added else None,
        "p99": round(percentile(added, 0.99), 1) if added else None,
        "events_per_s": round(delivered / wall, 1),
        "lost": lost,
        "duplicated": duplicated,
        "misrouted": misrouted,
        "failed": len(failed),
        "turns": len(results),
        "in_flight": round(in_flight, 1),
        # the fake model's and the clients' CPU: the same work in every run, so it tells how fast the vCPUs were
        # during the run (the CPU check, taken once at the start, can miss a slower minute)
        "harness_cpu_ms": round((cpu.get("model", 0) + cpu.get("bench", 0)) / max(len(results), 1) * 1000, 1),
    }
    done = len(results) - len(failed)
    print(f"{name}: {done}/{len(results)} turns in {wall:.1f} s, {in_flight:.1f} chats streaming on average")
    if failed:
        kinds = collections.Counter(failed).most_common(5)
        print(f"  turns that failed: {len(failed)} ({'; '.join(f'{n} of {kind}' for kind, n in kinds)})")
    print(f"  model called directly in the same shape: first token after {direct * 1000:.1f} ms (median)")
    print(f"  time to first token added by the platform: p50 {figures['p50']} ms, p99 {figures['p99']} ms")
    for mark, label in (
        ("created", "message saved, run enqueued (web)"),
        # a chat agent's model call is sent before these two are published: they time the worker's bookkeeping
        ("worker_started", "run announced (worker)"),
        ("step_started", "first step started (worker)"),
        ("token_published", "first token published (worker)"),
        ("token_received", "first token received (client)"),
    ):
        values = [r["marks"][mark] * 1000 for r in results if mark in r["marks"]]
        if values:
            print(f"    {label}: p50 {percentile(values, 0.5):.1f} ms after sending")
    print(
        f"  CPU used (of {2 * wall:.1f} core-seconds on 2 cores): "
        + ", ".join(f"{role} {seconds:.1f} s" for role, seconds in cpu.items())
        + f"; per turn {sum(cpu.values()) / max(len(results), 1) * 1000:.0f} ms"
    )
    print(
        f"  the fake model and the clients (the same work every run): {figures['harness_cpu_ms']} ms of CPU per turn"
        " (higher: slower vCPUs that minute; compare runs at similar figures)"
    )
    print(
        f"  events delivered: {delivered} ({figures['events_per_s']}/s); lost {lost}, duplicated {duplicated}, "
        f"misrouted {misrouted}"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--turns", type=int, default=4, help="turns per client in the steady shape")
    parser.add_argument("--think", type=float, default=0.2, help="longest pause between a client's turns (s)")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-gap", type=float, default=0.05)
    parser.add_argument("--first-token", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2, as make run)")
    parser.add_argument(
        "--turns-file", default=None, help="also write each measured turn (marks in ms) to this file as JSON lines"
    )
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=0,
        help="default: the concurrency + 16 (at most 200)",
    )
    args = parser.parse_args()

    from nexent_site.devstack import start_services, wait_for_port

    services = start_services(redis_db=2)
    processes: list[subprocess.Popen] = []
    try:
        setup_django()
        answer = " ".join(f"tok{i}" for i in range(args.tokens))  # every request streams the same answer
        model, model_url = fake_model(reply=answer, first_token_s=args.first_token, token_gap_s=args.token_gap)
        processes.append(model)
        n = args.concurrency
        answer_s = args.first_token + args.tokens * args.token_gap
        shapes = {
            "steady": lambda: Shape("steady", n, args.turns, args.think, answer_s),
            "burst": lambda: Shape("burst", n, 1, 0, 0),
        }
        baselines = {name: asyncio.run(direct_ttfts(model_url, make())) for name, make in shapes.items()}

        conversations, session = prepare(WARM_UP + 3 * n, model_url)
        port, queue = free_port(), f"bench-{os.getpid()}"
        env = dict(os.environ, CELERY_QUEUE=queue, NEXENT_PORT=str(port))
        # a turn holds a worker thread for its whole answer: one per chat, and 16 (the Procfile's default) as a
        # margin (the conversations' title tasks run in the background worker)
        threads = args.worker_threads or min(n + 16, 200)
        pool = os.environ.get("BENCH_POOL", "threads")
        processes.append(web_server(port=port, env=env))
        for _ in range(args.workers):  # thread-pool processes share the threads; each has a GIL of its own
            processes.append(
                celery_worker(queue=queue, pool=pool, concurrency=max(threads // args.workers, 1), env=env)
            )
        processes.append(background_worker(queue=queue, env=env))  # the conversations' titles
        wait_for_port(port, 90, "the web server")
        time.sleep(3)  # the worker starts
        print(
            f"nexent bench-chat: {n} concurrent chats, {args.tokens} tokens each, first token "
            f"{args.first_token * 1000:.0f} ms, token gap {args.token_gap * 1000:.0f} ms, worker threads {threads} in "
            f"{args.workers} process(es); steady: {args.turns} turns per chat, pauses up to {args.think * 1000:.0f} ms"
        )
        cpu_before = cpu_check_us()
        print(f"CPU check: sum(range(1000)) in {cpu_before:.1f} µs (lower is faster; 8.9 µs on a fast run)")
        timeout = 60 + answer_s * 4
        warm_up, concurrent_warm_up, steady_ids, burst_ids = (
            conversations[:WARM_UP],
            conversations[WARM_UP : WARM_UP + n],
            conversations[WARM_UP + n : WARM_UP + 2 * n],
            conversations[WARM_UP + 2 * n :],
        )

        async def run(ids: list[str], shape: Shape, results: list) -> float:
            sockets = await asyncio.gather(*(connect(port, c, session) for c in ids))
            try:
                started = time.perf_counter()
                await shape.drive(sockets, lambda ws: take_turn(ws, timeout), results.append)
                return time.perf_counter() - started
            finally:
                await asyncio.gather(*(ws.close() for ws in sockets))

        for index in range(0, WARM_UP, 2):  # pairs of chats, so that both web processes serve some first
            asyncio.run(run(warm_up[index : index + 2], Shape("burst", 2, 1, 0, 0), []))
        # then N at once, as a server that has been up a while has served: each worker thread that will take a
        # turn has had one (its database connection open, its first-use set-up done)
        asyncio.run(run(concurrent_warm_up, Shape("burst", n, 1, 0, 0), []))
        # the benchmark's own objects out of the garbage collector's full passes, as the platform's processes do
        # theirs (nexent_site/process_ready.py): a 100-250 ms pause in this process would delay every client's
        # frames, and count as latency added by the platform
        gc.collect()
        gc.freeze()
        figures = {}
        for name, ids in (("steady", steady_ids), ("burst", burst_ids)):
            results: list = []
            before = cpu_by_role()
            wall = asyncio.run(run(ids, shapes[name](), results))
            cpu = {role: seconds - before[role] for role, seconds in cpu_by_role().items()}
            figures[name] = summarise(name, results, baselines[name], wall, cpu)
            if args.turns_file:
                write_turns(args.turns_file, name, results, baselines[name])
        steady, burst = figures["steady"], figures["burst"]
        print(
            json.dumps(
                {
                    "concurrency": n,
                    "added_ttft_p50_ms": steady["p50"],
                    "added_ttft_p99_ms": steady["p99"],
                    "events_per_s": steady["events_per_s"],
                    "lost_events": steady["lost"] + burst["lost"],
                    "duplicated_events": steady["duplicated"] + burst["duplicated"],
                    "misrouted_events": steady["misrouted"] + burst["misrouted"],
                    "failed_turns": steady["failed"] + burst["failed"],
                    "turns": steady["turns"] + burst["turns"],
                    "chats_streaming": steady["in_flight"],
                    "burst_added_ttft_p50_ms": burst["p50"],
                    "burst_added_ttft_p99_ms": burst["p99"],
                    "cpu_check_us": round(cpu_before, 1),
                    "harness_cpu_ms_per_turn": steady["harness_cpu_ms"],
                }
            )
        )
    finally:
        stop_all(processes)
        services.stop()


if __name__ == "__main__":
    main()
