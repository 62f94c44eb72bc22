"""The REST API of knowledge bases, documents and search, through DRF's test client on the tenants' domains
(real PostgreSQL and Redis), and once end to end through the real ASGI server and a real Celery worker. The
one stand-in is the external embedding provider: the local OpenAI-compatible test server (`fake_llm`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import tenant_context

from accounts.models import User
from api.tests.fixtures import api_client, key_for
from conftest import Committed, host_of, owner_email
from files.models import StoredFile
from files.storage import files_storage
from knowledge.fields import pgvector_installed
from knowledge.models import Document, DocumentStatus, KnowledgeBase
from knowledge.services.bases import knowledge_base_create
from knowledge.services.documents import document_upload
from knowledge.services.ingestion import document_ingest
from knowledge.tests.fixtures import embedding_provider
from nexent_site.testing.fake_openai import FakeOpenAI
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

HANDBOOK = b"""# Travel policy

## Hotels
Hotels are booked through the travel desk. The nightly limit is 180 euros in most cities.

## Refunds
The zephyr refund form must be filed within thirty days of the trip.
"""


@pytest.fixture(autouse=True)
def isolated_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Uploads made in the test's transaction go to a temporary directory (they are never committed, so
    nothing would delete their bytes). Tests against the live server keep the storage its processes share."""
    if "asgi_server" in request.fixturenames:
        yield
        return
    with override_settings(FILES_ROOT=str(tmp_path)):
        files_storage.cache_clear()
        yield
    files_storage.cache_clear()


def kb_in(tenant: Tenant, fake: FakeOpenAI, slug: str = "manual", **options: Any) -> KnowledgeBase:
    with tenant_context(tenant):
        return knowledge_base_create(
            name=slug.title(), slug=slug, embedding_provider=embedding_provider(fake), **options
        )


def ingested(tenant: Tenant, kb: KnowledgeBase, name: str, data: bytes) -> Document:
    """Uploaded and ingested in this process (the service the Celery task calls)."""
    with tenant_context(tenant):
        document = document_upload(knowledge_base=kb, upload=ContentFile(data, name=name))
        document_ingest(document_id=document.pk)
        document.refresh_from_db()
    return document


def text_file(name: str = "notes.txt", data: bytes = b"The canteen opens at noon.") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="text/plain")


def counts(tenant: Tenant) -> tuple[int, int]:
    with tenant_context(tenant):
        return Document.objects.count(), StoredFile.objects.count()


# --- knowledge bases -------------------------------------------------------------------------------------


def test_a_knowledge_base_is_created_then_listed_and_read(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    with tenant_context(tenant_a):
        provider = embedding_provider(fake_llm)
    writer = api_as("knowledge:write")
    # when
    created = writer.post(
        "/api/v1/knowledge-bases/",
        {"name": "HR handbook", "slug": "hr", "embedding_provider": provider.pk, "chunk_size": 200, "top_k": 8},
        format="json",
    )
    # then
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["slug"] == "hr" and body["chunk_size"] == 200 and body["top_k"] == 8
    assert body["embedding_provider"] == provider.pk and body["embedding_dimension"] == fake_llm.dimension
    assert body["created_by"] == owner_email("alpha")
    assert body["documents"] == {"total": 0, "ready": 0, "in_progress": 0, "failed": 0, "cancelled": 0}
    reader = api_as("knowledge:read")
    listed = reader.get("/api/v1/knowledge-bases/")
    assert listed.status_code == 200
    assert [kb["slug"] for kb in listed.json()["results"]] == ["hr"]
    assert reader.get(f"/api/v1/knowledge-bases/{body['id']}/").json() == body


def test_invalid_settings_are_refused_with_the_field_names(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    with tenant_context(tenant_a):
        provider = embedding_provider(fake_llm)
    kb_in(tenant_a, fake_llm, slug="taken")
    client = api_as("knowledge:write")
    cases = [
        ({"slug": "x", "embedding_provider": provider.pk}, ["name"]),
        ({"name": "X", "slug": "not a slug", "embedding_provider": provider.pk, "top_k": 500}, ["slug", "top_k"]),
        ({"name": "X", "slug": "taken", "embedding_provider": provider.pk}, ["slug"]),
        ({"name": "X", "slug": "x", "embedding_provider": 2**40}, ["embedding_provider"]),
        ({"name": "X", "slug": "x", "embedding_provider": provider.pk, "colour": "blue"}, ["colour"]),
        ({"name": "X", "slug": "x", "embedding_provider": provider.pk, "keyword_weight": "NaN"}, ["keyword_weight"]),
        (
            {"name": "X", "slug": "x", "embedding_provider": provider.pk, "chunk_size": 100, "chunk_overlap": 100},
            ["chunk_overlap"],
        ),
    ]
    for payload, fields in cases:
        # when
        response = client.post("/api/v1/knowledge-bases/", payload, format="json")
        # then
        assert response.status_code == 400, (payload, response.content)
        error = response.json()["error"]
        assert error["code"] == "invalid" and sorted(error["fields"]) == fields, (payload, error)
    assert client.post("/api/v1/knowledge-bases/", [1, 2], format="json").status_code == 400
    with tenant_context(tenant_a):
        assert list(KnowledgeBase.objects.values_list("slug", flat=True)) == ["taken"]


def test_a_chat_provider_cannot_embed(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    from agents.tests.fixtures import make_provider

    with tenant_context(tenant_a):
        chat = make_provider(fake_llm, name="Chat only")
    # when
    response = api_as("knowledge:write").post(
        "/api/v1/knowledge-bases/", {"name": "X", "slug": "x", "embedding_provider": chat.pk}, format="json"
    )
    # then
    assert response.status_code == 400
    assert "no embedding provider" in response.json()["error"]["fields"]["embedding_provider"][0]


def test_settings_change_but_the_slug_does_not(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm, slug="manual")
    client = api_as("knowledge:write")
    url = f"/api/v1/knowledge-bases/{kb.pk}/"
    # when
    renamed = client.patch(
        url, {"name": "Operations manual", "slug": "manual", "search_mode": "keyword"}, format="json"
    )
    moved = client.patch(url, {"slug": "other"}, format="json")
    put = client.put(url, {"name": "Whole"}, format="json")
    # then
    assert renamed.status_code == 200, renamed.content
    assert renamed.json()["name"] == "Operations manual" and renamed.json()["search_mode"] == "keyword"
    assert moved.status_code == 400 and "cannot be changed" in moved.json()["error"]["fields"]["slug"][0]
    assert put.status_code == 405
    with tenant_context(tenant_a):
        assert KnowledgeBase.objects.get(pk=kb.pk).slug == "manual"


def test_the_list_is_filtered_searched_ordered_and_paginated(
    api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    # given
    kb_in(tenant_a, fake_llm, slug="alpha-docs", search_mode="keyword")
    kb_in(tenant_a, fake_llm, slug="beta-docs")
    kb_in(tenant_a, fake_llm, slug="gamma-docs")
    client = api_as("knowledge:read")

    def slugs(query: str) -> list[str]:
        response = client.get(f"/api/v1/knowledge-bases/?{query}")
        assert response.status_code == 200, response.content
        return [kb["slug"] for kb in response.json()["results"]]

    # when / then
    assert slugs("search_mode=keyword") == ["alpha-docs"]
    assert slugs("q=gamma") == ["gamma-docs"]
    assert slugs("ordering=-name") == ["gamma-docs", "beta-docs", "alpha-docs"]
    assert slugs("page_size=2&page=2") == ["gamma-docs"]
    for bad in ("search_mode=fuzzy", "page=0", "page_size=1000", "embedding_provider=abc"):
        response = client.get(f"/api/v1/knowledge-bases/?{bad}")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid", bad


def test_the_list_costs_the_same_queries_for_one_or_many_knowledge_bases(
    api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    # given
    client = api_as("knowledge:read")
    first = kb_in(tenant_a, fake_llm, slug="one")
    ingested(tenant_a, first, "a.txt", b"Some text about the canteen.")
    client.get("/api/v1/knowledge-bases/")  # the key's first use also records last_used_at

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get("/api/v1/knowledge-bases/")
        assert response.status_code == 200
        return len(captured.captured_queries)

    one = queries()
    for slug in ("two", "three", "four"):
        ingested(tenant_a, kb_in(tenant_a, fake_llm, slug=slug), f"{slug}.txt", b"More text.")
    # when
    many = queries()
    # then
    assert many == one
    body = client.get("/api/v1/knowledge-bases/").json()
    assert [kb["documents"]["ready"] for kb in body["results"]] == [1, 1, 1, 1]


def test_deleting_a_knowledge_base_removes_its_documents_and_files(
    api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    ingested(tenant_a, kb, "a.txt", b"Some text.")
    client = api_as("knowledge:write")
    # when
    response = client.delete(f"/api/v1/knowledge-bases/{kb.pk}/")
    # then
    assert response.status_code == 204
    assert client.get(f"/api/v1/knowledge-bases/{kb.pk}/").status_code == 404
    assert counts(tenant_a) == (0, 0)


def test_scopes_are_required_and_named(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    reader, files_only = api_as("knowledge:read"), api_as("files")
    # when / then
    for response in [
        files_only.get("/api/v1/knowledge-bases/"),
        files_only.get(f"/api/v1/knowledge-bases/{kb.pk}/documents/"),
        files_only.post(f"/api/v1/knowledge-bases/{kb.pk}/search/", {"query": "x"}, format="json"),
        files_only.post("/api/v1/search/", {"query": "x"}, format="json"),
    ]:
        assert response.status_code == 403
        assert response.json()["error"] == {
            "code": "missing_scope",
            "message": "This needs the “knowledge:read” scope.",
        }
    for method, url in [
        ("post", "/api/v1/knowledge-bases/"),
        ("patch", f"/api/v1/knowledge-bases/{kb.pk}/"),
        ("delete", f"/api/v1/knowledge-bases/{kb.pk}/"),
        ("post", f"/api/v1/knowledge-bases/{kb.pk}/reindex/"),
        ("post", f"/api/v1/knowledge-bases/{kb.pk}/documents/"),
    ]:
        response = getattr(reader, method)(url, {}, format="json")
        assert response.status_code == 403, url
        assert response.json()["error"]["message"] == "This needs the “knowledge:write” scope."
    anonymous = api_client(tenant_a).get("/api/v1/knowledge-bases/")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"


def test_unknown_and_malformed_ids_answer_404(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    other = kb_in(tenant_a, fake_llm, slug="other")
    document = ingested(tenant_a, kb, "a.txt", b"Some text.")
    client = api_as("knowledge:write")
    # when / then
    for method, url in [
        ("get", f"/api/v1/knowledge-bases/{kb.pk + 1000}/"),
        ("get", "/api/v1/knowledge-bases/99999999999999999999999/"),
        ("get", "/api/v1/knowledge-bases/abc/"),
        ("get", "/api/v1/knowledge-bases/-1/"),
        ("get", "/api/v1/knowledge-bases/99999999999999999999999/documents/"),
        ("get", f"/api/v1/knowledge-bases/{kb.pk}/documents/99999999999999999999999/"),
        ("get", f"/api/v1/knowledge-bases/{other.pk}/documents/{document.pk}/"),  # not that base's document
        ("post", f"/api/v1/knowledge-bases/{other.pk}/documents/{document.pk}/retry/"),
        ("delete", f"/api/v1/knowledge-bases/{other.pk}/documents/{document.pk}/"),
        ("post", "/api/v1/knowledge-bases/99999999999999999999999/search/"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found", url
    assert counts(tenant_a) == (1, 1)


# --- documents -------------------------------------------------------------------------------------------


def test_several_files_are_uploaded_and_queued(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    client = api_as("knowledge:write")
    # when
    response = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents/",
        {"file": [text_file("canteen.txt"), text_file("rooms.md", b"# Rooms\n\nAtlas is on floor 2.")]},
        format="multipart",
    )
    # then
    assert response.status_code == 201, response.content
    documents = response.json()["documents"]
    assert [(d["title"], d["status"], d["progress"], d["knowledge_base"]) for d in documents] == [
        ("canteen", "queued", 0, kb.pk),
        ("rooms", "queued", 0, kb.pk),
    ]
    assert documents[1]["file"]["name"] == "rooms.md" and documents[1]["file"]["content_type"] == "text/markdown"
    assert documents[0]["uploaded_by"] == owner_email("alpha")
    summary = client.get(f"/api/v1/knowledge-bases/{kb.pk}/").json()["documents"]
    assert summary["total"] == 2 and summary["in_progress"] == 2


def test_a_single_upload_may_be_titled(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    client = api_as("knowledge:write")
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents/"
    # when
    titled = client.post(url, {"file": text_file(), "title": "Canteen hours"}, format="multipart")
    refused = client.post(url, {"file": [text_file(), text_file("b.txt")], "title": "Both"}, format="multipart")
    # then
    assert titled.status_code == 201 and titled.json()["documents"][0]["title"] == "Canteen hours"
    assert refused.status_code == 400 and list(refused.json()["error"]["fields"]) == ["title"]


@override_settings(FILES_MAX_BYTES=1024)
def test_refused_uploads_give_the_reason_and_store_nothing(
    api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant, tmp_path: Path
) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    client = api_as("knowledge:write")
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents/"
    cases = [
        ({"file": text_file("empty.txt", b"")}, 400, "empty_file"),
        ({"file": text_file("big.txt", b"x" * 2048)}, 413, "file_too_large"),
        (
            {"file": [text_file("fine.txt"), text_file("tool.exe", b"MZ\x90\x00" + b"\0" * 200)]},
            415,
            "unsupported_type",
        ),
        ({}, 400, "invalid"),
        ({"file": "not a file"}, 400, "invalid"),
        ({"file": text_file(), "colour": "blue"}, 400, "invalid"),
    ]
    for data, status_code, code in cases:
        # when
        response = client.post(url, data, format="multipart")
        # then
        assert response.status_code == status_code, (data, response.content)
        assert response.json()["error"]["code"] == code
    json_body = client.post(url, {"file": "x"}, format="json")
    assert json_body.status_code == 415 and json_body.json()["error"]["code"] == "unsupported_media_type"
    assert counts(tenant_a) == (0, 0)
    assert not any(path.is_file() for path in tmp_path.rglob("*"))  # the first file's bytes were removed too


def test_documents_are_listed_filtered_read_and_deleted(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    ready = ingested(tenant_a, kb, "handbook.md", HANDBOOK)
    with tenant_context(tenant_a):
        queued = document_upload(knowledge_base=kb, upload=ContentFile(b"Waiting.", name="later.txt"))
    client = api_as("knowledge:write")
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents/"
    # when
    listed = client.get(url).json()["results"]
    only_ready = client.get(f"{url}?status=ready").json()["results"]
    searched = client.get(f"{url}?q=hand").json()["results"]
    by_title = client.get(f"{url}?ordering=title").json()["results"]
    detail = client.get(f"{url}{ready.pk}/").json()
    deleted = client.delete(f"{url}{queued.pk}/")
    # then
    assert [d["id"] for d in listed] == [queued.pk, ready.pk]  # newest first
    assert [d["id"] for d in only_ready] == [ready.pk] and [d["id"] for d in searched] == [ready.pk]
    assert [d["title"] for d in by_title] == ["handbook", "later"]
    assert detail["status"] == "ready" and detail["progress"] == 100 and detail["chunk_count"] == ready.chunk_count > 0
    assert detail["error"] == "" and detail["ingested_at"]
    assert client.get(f"{url}?status=sleeping").status_code == 400
    assert deleted.status_code == 204 and client.get(f"{url}{queued.pk}/").status_code == 404
    assert counts(tenant_a) == (1, 1)


def test_documents_are_retried_cancelled_and_reindexed(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    ready = ingested(tenant_a, kb, "handbook.md", HANDBOOK)
    with tenant_context(tenant_a):
        queued = document_upload(knowledge_base=kb, upload=ContentFile(b"Waiting.", name="later.txt"))
    client = api_as("knowledge:write")
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents/"
    # when / then
    refused = client.post(f"{url}{queued.pk}/retry/")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_retryable"
    cancelled = client.post(f"{url}{queued.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"{url}{queued.pk}/cancel/").json()["error"]["code"] == "not_in_progress"
    retried = client.post(f"{url}{queued.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    reindexed = client.post(f"{url}{ready.pk}/reindex/")
    assert reindexed.status_code == 200 and reindexed.json()["status"] == "queued"
    assert client.post(f"{url}{ready.pk}/reindex/").json()["error"]["code"] == "in_progress"
    with tenant_context(tenant_a):
        assert Document.objects.get(pk=ready.pk).chunks.filter(live=True).count() == ready.chunk_count


def test_a_knowledge_base_is_reindexed(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    ingested(tenant_a, kb, "handbook.md", HANDBOOK)
    # when
    response = api_as("knowledge:write").post(f"/api/v1/knowledge-bases/{kb.pk}/reindex/")
    # then
    assert response.status_code == 200 and response.json() == {"queued": 1}


def test_an_upload_retried_with_its_idempotency_key_is_stored_once(
    api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    client = api_as("knowledge:write")
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents/"
    key = {"HTTP_IDEMPOTENCY_KEY": "upload-1"}
    # when
    first = client.post(url, {"file": text_file()}, format="multipart", **key)
    again = client.post(url, {"file": text_file()}, format="multipart", **key)
    other = client.post(url, {"file": text_file("other.txt", b"Something else.")}, format="multipart", **key)
    # then
    assert first.status_code == 201 and again.status_code == 201
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert counts(tenant_a) == (1, 1)


# --- search ----------------------------------------------------------------------------------------------


def test_a_knowledge_base_is_searched(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    document = ingested(tenant_a, kb, "handbook.md", HANDBOOK)
    client = api_as("knowledge:read")
    # when
    response = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/search/", {"query": "zephyr refund form", "top_k": 1}, format="json"
    )
    # then
    assert response.status_code == 200, response.content
    body = response.json()
    # hybrid with pgvector; keyword-only, saying so, on a PostgreSQL without it (CI's second run)
    hybrid = pgvector_installed(connection)
    assert body["mode"] == ("hybrid" if hybrid else "keyword") and len(body["hits"]) == 1
    assert hybrid or body["warnings"]
    hit = body["hits"][0]
    assert hit["document_id"] == document.pk and hit["document_title"] == "handbook"
    assert "zephyr refund form" in hit["text"] and "Refunds" in hit["heading_path"]
    assert hit["knowledge_base"] == "manual" and hit["chunk_id"] > 0 and hit["score"] > 0


def test_several_knowledge_bases_are_searched_by_slug(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    ingested(tenant_a, kb_in(tenant_a, fake_llm, slug="travel"), "handbook.md", HANDBOOK)
    ingested(tenant_a, kb_in(tenant_a, fake_llm, slug="canteen"), "canteen.txt", b"The zephyr canteen opens at noon.")
    client = api_as("knowledge:read")
    # when
    both = client.post("/api/v1/search/", {"query": "zephyr", "mode": "keyword"}, format="json")
    one = client.post("/api/v1/search/", {"query": "zephyr", "knowledge_bases": ["canteen"]}, format="json")
    unknown = client.post("/api/v1/search/", {"query": "zephyr", "knowledge_bases": ["travel", "nope"]}, format="json")
    # then
    assert both.status_code == 200 and {h["knowledge_base"] for h in both.json()["hits"]} == {"travel", "canteen"}
    assert {h["knowledge_base"] for h in one.json()["hits"]} == {"canteen"}
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["fields"]["knowledge_bases"][0]


def test_bad_searches_are_refused_with_the_field_names(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm)
    client = api_as("knowledge:read")
    url = f"/api/v1/knowledge-bases/{kb.pk}/search/"
    cases = [
        ({}, ["query"]),
        ({"query": "  "}, ["query"]),
        ({"query": "x" * 2001}, ["query"]),
        ({"query": "x", "top_k": 10**12}, ["top_k"]),
        ({"query": "x", "top_k": 0, "mode": "psychic"}, ["mode", "top_k"]),
        ({"query": "x", "score_threshold": 2}, ["score_threshold"]),
        ({"query": "x", "knowledge_bases": ["manual"]}, ["knowledge_bases"]),  # only for /api/v1/search/
    ]
    for payload, fields in cases:
        # when
        response = client.post(url, payload, format="json")
        # then
        assert response.status_code == 400, payload
        assert sorted(response.json()["error"]["fields"]) == fields, payload
    malformed = client.post(url, "{not json", content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_request"
    text = client.post(url, "query", content_type="text/plain")
    assert text.status_code == 415


# --- tenants ---------------------------------------------------------------------------------------------


def test_another_tenant_sees_nothing_of_this_tenants_knowledge(
    api_as: Any, client: Client, fake_llm: FakeOpenAI, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    # given
    kb = kb_in(tenant_a, fake_llm, slug="secret")
    document = ingested(tenant_a, kb, "handbook.md", HANDBOOK)
    with tenant_context(tenant_b):
        assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()
        client.force_login(User.objects.get(email=owner_email("beta")))
    b_key = api_as("admin", tenant=tenant_b)
    _, a_raw = key_for(tenant_a, scopes="admin")
    a_urls = [
        ("get", f"/api/v1/knowledge-bases/{kb.pk}/"),
        ("get", f"/api/v1/knowledge-bases/{kb.pk}/documents/"),
        ("get", f"/api/v1/knowledge-bases/{kb.pk}/documents/{document.pk}/"),
        ("post", f"/api/v1/knowledge-bases/{kb.pk}/documents/{document.pk}/reindex/"),
        ("delete", f"/api/v1/knowledge-bases/{kb.pk}/"),
    ]
    # when / then: B's key and B's session on B's domain do not find A's ids
    for method, url in a_urls:
        assert getattr(b_key, method)(url).status_code == 404, url
        assert getattr(client, method)(url, HTTP_HOST=host_of(tenant_b)).status_code == 404, url
    assert b_key.get("/api/v1/knowledge-bases/").json()["results"] == []
    search = b_key.post("/api/v1/search/", {"query": "zephyr", "knowledge_bases": ["secret"]}, format="json")
    assert search.status_code == 400
    assert b_key.post("/api/v1/search/", {"query": "zephyr"}, format="json").json()["hits"] == []
    # ... and on A's domain, B's session is nobody and A's key is unknown on B's domain
    for method, url in a_urls:
        response = getattr(client, method)(url, HTTP_HOST=host_of(tenant_a))
        assert response.status_code == 401, url
    assert api_client(tenant_b, a_raw).get("/api/v1/knowledge-bases/").status_code == 401
    assert counts(tenant_a) == (1, 1)


# --- end to end ------------------------------------------------------------------------------------------


def test_an_upload_is_ingested_by_the_worker_and_shown_ready(
    asgi_server: dict, committed: Committed, committed_key: Any, make_kb: Any, tenant_a: Tenant
) -> None:
    # given: everything committed, the requests sent to the real server, the worker ingesting
    kb = make_kb(slug="live-handbook")
    raw = committed_key(tenant_a, scopes="knowledge:write")
    base = f"http://127.0.0.1:{asgi_server['port']}/api/v1/knowledge-bases/{kb.pk}"
    headers = {"Host": f"{host_of(tenant_a)}:{asgi_server['port']}", "Authorization": f"Bearer {raw}"}
    # when
    response = requests.post(
        f"{base}/documents/", files={"file": ("handbook.md", HANDBOOK)}, headers=headers, timeout=30
    )
    # then
    assert response.status_code == 201, response.text
    document_id = response.json()["documents"][0]["id"]
    deadline = time.monotonic() + 60
    while True:
        document = requests.get(f"{base}/documents/{document_id}/", headers=headers, timeout=10).json()
        if document["status"] not in ("queued", "extracting", "chunking", "embedding", "indexing"):
            break
        assert time.monotonic() < deadline, document
        time.sleep(0.2)
    assert document["status"] == DocumentStatus.READY and document["progress"] == 100, document
    assert document["chunk_count"] > 0 and document["error"] == ""
    found = requests.post(f"{base}/search/", json={"query": "zephyr refund form"}, headers=headers, timeout=30)
    assert found.status_code == 200 and found.json()["hits"][0]["document_id"] == document_id
    summary = requests.get(f"{base}/", headers=headers, timeout=10).json()["documents"]
    assert summary["ready"] == 1 and summary["total"] == 1
