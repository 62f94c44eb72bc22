"""Schema fuzzing: Schemathesis generates requests from the OpenAPI schema at /api/schema/ (valid and invalid
bodies, parameters, ids, content types) and sends them to the real ASGI server, with an API key of every
scope: once with generated ids, once with the ids of seeded objects (so bodies reach the code behind the
lookups). No request may get a 5xx. Runs in a tenant of its own, deleted afterwards, because the fuzzer creates
and deletes whatever the schema allows. Nothing is faked (the agents it may run have a model provider that
points nowhere, so their runs fail fast, as they would in production)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import PASSWORD, Committed, host_of
from tenants.models import Tenant

pytestmark = pytest.mark.django_db
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
def fuzz_tenant(committed: Committed) -> Any:
    from tenants.services import tenant_create, tenant_delete

    public = Tenant.objects.get(schema_name="public")
    tenant = committed.run(
        public,
        lambda: tenant_create(slug="fuzz", name="Fuzz", owner_email="owner@fuzz.test", owner_password=PASSWORD),
    )

    def unlimited() -> None:
        tenant.api_requests_per_minute = 0
        tenant.save(update_fields=["api_requests_per_minute"])

    committed.run(public, unlimited)
    committed.on_teardown(public, lambda: tenant_delete(tenant=Tenant.objects.get(pk=tenant.pk)))
    return tenant


def schemathesis_run(
    tmp_path: Path, port: int, host: str, key: str, *, config: Path | None = None, options: tuple = ()
) -> str:
    """Run Schemathesis on the saved schema against the server; returns its output, asserting no 5xx."""
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            *([f"--config-file={config}"] if config else []),
            "run",
            *options,
            str(tmp_path / "schema.json"),
            f"--url=http://127.0.0.1:{port}",
            f"--header=Host: {host}",
            f"--header=Authorization: Bearer {key}",
            "--checks=not_a_server_error",
            f"--max-examples={os.environ.get('FUZZ_MAX_EXAMPLES', '15')}",
            "--phases=examples,coverage,fuzzing",
            "--workers=2",
            "--seed=20261122",
            "--request-timeout=30",
            "--no-color",
            "--suppress-health-check=all",
            "--generation-database=none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-3000:]
    return result.stdout


def seed(tenant: Tenant) -> dict[str, Any]:
    """One of everything the id-bearing operations act on, so the fuzzer reaches past the 404s."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from accounts.models import User
    from agents.models import Agent, AgentRun, ModelProvider
    from agents.services.agents import agent_publish
    from conversations.models import Conversation, Message
    from files.services import file_store
    from knowledge.models import Document, KnowledgeBase

    owner = User.objects.get(email="owner@fuzz.test")
    # (the first pass may have deleted the default providers)
    embedder = ModelProvider.objects.create(
        name="Fuzz embeddings", kind="embedding", base_url="http://127.0.0.1:9/v1", model_name="none", dimension=16
    )
    kb = KnowledgeBase.objects.create(
        name="Fuzz KB", slug="fuzz-kb", embedding_provider=embedder, embedding_dimension=16
    )
    stored = file_store(upload=SimpleUploadedFile("fuzz.txt", b"Fuzzing text."), owner=owner)
    document = Document.objects.create(knowledge_base=kb, file=stored, title="fuzz", status="failed", error="seeded")
    agent = Agent.objects.create(name="Fuzz agent", slug="fuzz-agent", mode="chat")
    agent_publish(agent=agent)
    conversation = Conversation.objects.create(user=owner, agent=agent, title="Fuzz")
    run = AgentRun.objects.create(agent=agent, spec={}, trigger="api", status="failed", user_email=owner.email)
    message = Message.objects.create(conversation=conversation, role="assistant", status="failed", run=run)
    return {
        "kb": kb.pk,
        "document": document.pk,
        "file": str(stored.pk),
        "agent": agent.slug,
        "conversation": str(conversation.pk),
        "message": message.pk,
        "run": str(run.pk),
        "provider": embedder.pk,
    }


def seeded_config(ids: dict[str, Any]) -> str:
    """schemathesis.toml giving every path parameter the id of a seeded object."""
    by_path = [
        (r"^/api/v1/knowledge-bases/\\{kb_id\\}/documents/\\{id\\}", ids["document"]),
        (r"^/api/v1/knowledge-bases/\\{id\\}", ids["kb"]),
        (r"^/api/v1/conversations/\\{conversation_id\\}/messages/\\{id\\}", ids["message"]),
        (r"^/api/v1/conversations/\\{id\\}", ids["conversation"]),
        (r"^/api/v1/files/\\{id\\}", ids["file"]),
        (r"^/api/v1/providers/\\{id\\}", ids["provider"]),
        (r"^/api/v1/runs/\\{id\\}", ids["run"]),
    ]
    lines = [
        "[parameters]",
        f'"path.kb_id" = {ids["kb"]}',
        f'"path.conversation_id" = "{ids["conversation"]}"',
        f'"path.slug" = "{ids["agent"]}"',
    ]
    for pattern, value in by_path:
        quoted = f'"{value}"' if isinstance(value, str) else value
        lines += ["", "[[operations]]", f'include-path-regex = "{pattern}"', f'parameters = {{ "path.id" = {quoted} }}']
    return "\n".join(lines) + "\n"


def test_no_generated_request_gets_a_server_error(
    asgi_server: dict, committed: Committed, committed_key: Any, fuzz_tenant: Tenant, tmp_path: Path
) -> None:
    # given: the schema, as the server publishes it, and an admin key
    port, host = asgi_server["port"], host_of(fuzz_tenant)
    schema = requests.get(f"http://127.0.0.1:{port}/api/schema/?format=json", headers={"Host": host}, timeout=30)
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    (tmp_path / "schema.json").write_text(schema.text)
    key = committed_key(fuzz_tenant, scopes="admin", email="owner@fuzz.test")

    # when / then: every operation with generated ids, bodies and parameters
    output = schemathesis_run(tmp_path, port, host, key)
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) >= 40, output[-3000:]  # every REST operation was exercised

    # and with the ids of real objects, so the generated bodies reach the code behind the lookups (deletes
    # were fuzzed above; a provider test would call whatever URL the fuzzer wrote into it)
    ids = committed.run(fuzz_tenant, lambda: seed(fuzz_tenant))
    (tmp_path / "seeded.toml").write_text(seeded_config(ids))
    output = schemathesis_run(
        tmp_path,
        port,
        host,
        key,
        config=tmp_path / "seeded.toml",
        options=("--exclude-method=DELETE", "--exclude-path-regex=/test/$"),
    )
    assert "Missing test data" not in output, output[-3000:]
