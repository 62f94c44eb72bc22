"""`make bench-api`: the REST API's list endpoints under a steady request rate, and the added latency of the
OpenAI-compatible chat completions endpoint.

Starts (or reuses) the embedded PostgreSQL and Redis, a tenant `bench` with agents, conversations, knowledge
bases and files to list, the web server as the Procfile runs it (uvicorn, two worker processes, a database
connection pool), a real Celery worker, and a local fake model (OpenAI-compatible HTTP/SSE) with a fixed
latency. Requests carry an API key, so each one
is authenticated, scope-checked and rate-limited in Redis as in production.

Reported: requests per second served and p50/p95 latency of the list endpoints at a fixed arrival rate
(open loop: requests are sent on schedule whether or not earlier ones finished), and the latency
`/v1/chat/completions` adds to the model's own (a non-streamed completion, against the same model called directly
as the platform calls it: streamed, read to the end).
Last line: JSON with `rps`, `list_p50_ms`, `list_p95_ms`, `chat_added_p50_ms`.

    python bench/api.py [--rate 100] [--seconds 20] [--chats 30]
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
    background_worker,
    celery_worker,
    cpu_check_us,
    free_port,
    percentile,
    setup_django,
    stop_all,
    web_server,
)

HOST = "bench.localhost"
LIST_PATHS = [
    "/api/v1/agents/",
    "/api/v1/conversations/",
    "/api/v1/knowledge-bases/",
    "/api/v1/files/",
    "/v1/models",
]


def prepare(model_url: str) -> str:
    """Tenant, agents, conversations, knowledge bases and files to list; returns a new API key."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from agents.models import Agent, ModelProvider
    from agents.services.agents import agent_publish
    from agents.services.providers import provider_save
    from api.models import ApiKey
    from api.services import apikey_create
    from conversations.models import Conversation
    from conversations.services import conversation_start
    from files.models import StoredFile
    from files.services import file_store
    from knowledge.models import KnowledgeBase
    from knowledge.services.bases import knowledge_base_create
    from tenants.models import Tenant
    from tenants.services import platform_tenant_ensure, tenant_create

    call_command("migrate_schemas", "--noinput", verbosity=0)
    platform_tenant_ensure()
    tenant = Tenant.objects.filter(schema_name="bench").first() or tenant_create(
        slug="bench", name="Bench", owner_email="bench@bench.test", owner_password="Bench-Password-123"
    )
    # The benchmark measures latency, not the limits: no organisation-wide request limit for it.
    tenant.api_requests_per_minute, tenant.monthly_token_budget = 0, 0
    tenant.save(update_fields=["api_requests_per_minute", "monthly_token_budget"])
    with tenant_context(tenant):
        user = User.objects.get(email="bench@bench.test")
        provider = ModelProvider.objects.filter(name="Bench model").first() or ModelProvider(name="Bench model")
        provider.base_url, provider.model_name, provider.kind = model_url, "fake", "chat"
        provider.max_concurrency = 10_000
        provider_save(provider=provider, api_key="")
        embedder = ModelProvider.objects.filter(name="Bench embeddings").first() or ModelProvider(
            name="Bench embeddings", kind="embedding", dimension=16
        )
        embedder.base_url, embedder.model_name = model_url, "fake-embed"
        provider_save(provider=embedder, api_key="")
        for index in range(20):
            agent, _ = Agent.objects.get_or_create(slug=f"bench-{index}", defaults={"name": f"Bench {index}"})
            agent.chat_provider, agent.mode = provider, "chat"
            agent.save()
            if agent.published_version_id is None:
                agent_publish(agent=agent)
        Conversation.objects.filter(user=user).delete()
        for index in range(60):
            conversation_start(user=user, agent=Agent.objects.get(slug=f"bench-{index % 20}"), title=f"Chat {index}")
        for index in range(10 - KnowledgeBase.objects.count()):
            knowledge_base_create(name=f"Bench KB {index}", slug=f"bench-kb-{index}", embedding_provider=embedder)
        for index in range(30 - StoredFile.objects.filter(owner=user).count()):
            file_store(upload=SimpleUploadedFile(f"note-{index}.txt", b"bench file\n" * 50), owner=user)
        ApiKey.objects.filter(name="bench").delete()
        _, raw = apikey_create(user=user, name="bench", scopes="admin")
        return raw


async def open_loop(port: int, key: str, rate: float, seconds: float) -> tuple[list[float], int, float, float]:
    """Send `rate` requests a second for `seconds`, cycling over the list endpoints. Returns the latencies in
    ms, the errors, the wall time and this client's own CPU time per request (ms): it shares the cores with
    the server, so it is aiohttp, whose cost stays flat however many requests are in flight."""
    import aiohttp

    headers = {"Host": HOST, "Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{port}", headers=headers, connector=connector, timeout=timeout
    ) as client:

        async def one(path: str) -> None:
            nonlocal errors
            started = time.perf_counter()
            try:
                async with client.get(path) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)

        tasks = []
        started, cpu_started = time.perf_counter(), time.process_time()
        total = int(rate * seconds)
        for index in range(total):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(LIST_PATHS[index % len(LIST_PATHS)])))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
        client_cpu_ms = (time.process_time() - cpu_started) * 1000 / max(total, 1)
    return latencies, errors, wall, client_cpu_ms


def direct_completion_ms(base_url: str, samples: int = 10) -> float:
    """The fake model's own time for a whole answer, called directly as the platform calls it: streamed (so
    that it can relay the tokens and stop mid-answer), read to the end of the stream."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="x")
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        for _chunk in client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def chat_completions_ms(port: int, key: str, count: int, concurrency: int = 5) -> list[float]:
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=key, default_headers={"Host": HOST}, max_retries=0
    )

    def one(index: int) -> float:
        started = time.perf_counter()
        client.chat.completions.create(model=f"bench-{index % 20}", messages=[{"role": "user", "content": "hi"}])
        return (time.perf_counter() - started) * 1000

    one(0)  # warm-up
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100, help="list requests per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--chats", type=int, default=30, help="chat completions to time")
    parser.add_argument("--model-latency", type=float, default=0.2, help="the fake model's first-token delay (s)")
    args = parser.parse_args()

    from nexent_site.devstack import start_services, wait_for_port

    services = start_services(redis_db=3)
    processes: list[subprocess.Popen] = []
    fake = None
    try:
        setup_django()
        from nexent_site.testing.fake_openai import FakeOpenAI, Reply

        fake = FakeOpenAI(token_gap_s=0.01).start()
        reply = Reply(content="A fixed answer of ten words for the benchmark run here.", delay_s=args.model_latency)
        fake.next_reply = lambda body: reply
        key = prepare(fake.base_url)
        port, queue = free_port(), f"bench-{os.getpid()}"
        env = dict(os.environ, CELERY_QUEUE=queue, NEXENT_PORT=str(port))
        processes += [  # as make run starts them
            web_server(port=port, env=env),
            *(celery_worker(queue=queue, pool="threads", concurrency=16, env=env) for _ in range(2)),
            background_worker(queue=queue, env=env),
        ]
        wait_for_port(port, 90, "the web server")
        time.sleep(3)  # the worker starts
        cpu_before = cpu_check_us()
        print(f"nexent bench-api: list endpoints at {args.rate:.0f} requests/s for {args.seconds:.0f} s")
        print(f"  CPU check: sum(range(1000)) in {cpu_before:.1f} µs (lower is faster; 8.9 µs on a fast run)")
        print("  endpoints: " + ", ".join(LIST_PATHS))
        asyncio.run(open_loop(port, key, rate=20, seconds=2))  # warm-up, not measured
        latencies, errors, wall, client_cpu_ms = asyncio.run(open_loop(port, key, args.rate, args.seconds))
        rps = len(latencies) / wall
        list_p50, list_p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
        print(f"served {len(latencies)} requests in {wall:.1f} s: {rps:.1f}/s; errors {errors}")
        print(f"  the load generator's own CPU: {client_cpu_ms:.2f} ms per request (same cores as the server)")
        print(f"list latency: p50 {list_p50:.1f} ms, p95 {list_p95:.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms")

        baseline = direct_completion_ms(fake.base_url)
        chats = chat_completions_ms(port, key, args.chats)
        added = [value - baseline for value in chats]
        print(f"model called directly: whole answer in {baseline:.1f} ms (median)")
        print(
            f"/v1/chat/completions ({args.chats}, 5 at a time): p50 {percentile(chats, 0.5):.1f} ms, "
            f"added by the platform p50 {percentile(added, 0.5):.1f} ms, p95 {percentile(added, 0.95):.1f} ms"
        )
        figures = {
            "rps": round(rps, 1),
            "list_p50_ms": round(list_p50, 1),
            "list_p95_ms": round(list_p95, 1),
            "chat_added_p50_ms": round(percentile(added, 0.5), 1),
            "errors": errors,
            "cpu_check_us": round(cpu_before, 1),
        }
        print(json.dumps(figures))
    finally:
        stop_all(processes)
        if fake is not None:
            fake.stop()
        services.stop()


if __name__ == "__main__":
    main()
