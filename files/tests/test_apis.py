"""The REST API of stored files, through DRF's test client on the tenants' domains (real PostgreSQL and
Redis, files in a temporary directory). Nothing is faked but the embedding provider behind the one knowledge
base document (the local OpenAI-compatible test server, `fake_llm`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create
from api.tests.fixtures import api_client, key_for
from conftest import PASSWORD, host_of, owner_email
from files.models import StoredFile
from files.storage import files_storage
from knowledge.services.bases import knowledge_base_create
from knowledge.services.documents import document_upload
from knowledge.tests.fixtures import embedding_provider
from nexent_site.testing.fake_openai import FakeOpenAI
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

EXE = b"MZ\x90\x00" + b"\0" * 200


@pytest.fixture(autouse=True)
def isolated_storage(tmp_path: Path) -> Iterator[None]:
    with override_settings(FILES_ROOT=str(tmp_path)):
        files_storage.cache_clear()
        yield
    files_storage.cache_clear()


def text_file(name: str = "notes.txt", data: bytes = b"The launch is on Tuesday.") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def stored_count(tenant: Tenant) -> int:
    with tenant_context(tenant):
        return StoredFile.objects.count()


def member_client(tenant: Tenant, scopes: str = "files") -> Any:
    with tenant_context(tenant):
        user_create(email=f"member@{tenant.schema_name}.test", password=PASSWORD, role="member")
    _, raw = key_for(tenant, scopes=scopes, email=f"member@{tenant.schema_name}.test")
    return api_client(tenant, raw)


def test_a_file_is_uploaded_read_downloaded_and_deleted(api_as: Any, tenant_a: Tenant) -> None:
    # given
    client = api_as("files")
    # when
    created = client.post("/api/v1/files/", {"file": text_file()}, format="multipart")
    # then
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "notes.txt" and body["size"] == 25 and body["content_type"] == "text/plain"
    assert body["owner"] == owner_email("alpha") and len(body["sha256"]) == 64
    detail = client.get(f"/api/v1/files/{body['id']}/").json()
    assert {k: v for k, v in detail.items() if not k.startswith("download")} == body
    link = urlsplit(detail["download_url"])
    assert link.netloc == host_of(tenant_a) and detail["download_url_expires_at"]
    download = Client().get(link.path, HTTP_HOST=host_of(tenant_a))
    assert download.status_code == 200 and b"".join(download.streaming_content) == b"The launch is on Tuesday."
    listed = client.get("/api/v1/files/").json()
    assert [f["id"] for f in listed["results"]] == [body["id"]] and "download_url" not in listed["results"][0]
    deleted = client.delete(f"/api/v1/files/{body['id']}/")
    assert deleted.status_code == 204
    assert client.get(f"/api/v1/files/{body['id']}/").status_code == 404
    assert stored_count(tenant_a) == 0


def test_the_list_is_filtered_searched_and_ordered(api_as: Any) -> None:
    # given
    client = api_as("files")
    client.post("/api/v1/files/", {"file": text_file("b-notes.txt", b"short")}, format="multipart")
    client.post("/api/v1/files/", {"file": text_file("a-data.json", b'{"a": [1, 2, 3, 4]}')}, format="multipart")

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/files/?{query}")
        assert response.status_code == 200, response.content
        return [f["name"] for f in response.json()["results"]]

    # when / then
    assert names("") == ["a-data.json", "b-notes.txt"]  # newest first
    assert names("content_type=text/plain") == ["b-notes.txt"]
    assert names("q=data") == ["a-data.json"]
    assert names("ordering=size") == ["b-notes.txt", "a-data.json"]
    assert client.get("/api/v1/files/?page=abc").status_code == 400


def test_members_see_their_own_files_and_admins_every_file(api_as: Any, tenant_a: Tenant) -> None:
    # given
    member = member_client(tenant_a)
    owner_files, owner_admin = api_as("files"), api_as("admin")
    mine = member.post("/api/v1/files/", {"file": text_file("mine.txt")}, format="multipart").json()
    theirs = owner_files.post("/api/v1/files/", {"file": text_file("theirs.txt")}, format="multipart").json()
    # when / then
    assert [f["name"] for f in member.get("/api/v1/files/").json()["results"]] == ["mine.txt"]
    assert [f["name"] for f in owner_files.get("/api/v1/files/").json()["results"]] == ["theirs.txt"]
    assert {f["name"] for f in owner_admin.get("/api/v1/files/").json()["results"]} == {"mine.txt", "theirs.txt"}
    assert member.get(f"/api/v1/files/{theirs['id']}/").status_code == 404
    assert member.delete(f"/api/v1/files/{theirs['id']}/").status_code == 404
    assert owner_admin.get(f"/api/v1/files/{mine['id']}/").json()["owner"] == "member@alpha.test"
    assert stored_count(tenant_a) == 2


@override_settings(FILES_MAX_BYTES=1024)
def test_refused_uploads_give_the_reason_and_store_nothing(api_as: Any, tenant_a: Tenant, tmp_path: Path) -> None:
    # given
    client = api_as("files")
    cases = [
        ({"file": text_file("empty.txt", b"")}, 400, "empty_file"),
        ({"file": text_file("big.txt", b"x" * 2048)}, 413, "file_too_large"),
        ({"file": text_file("tool.exe", EXE)}, 415, "unsupported_type"),
        ({}, 400, "invalid"),
        ({"file": "just text"}, 400, "invalid"),
        ({"file": text_file(), "folder": "x"}, 400, "invalid"),
    ]
    for data, status_code, code in cases:
        # when
        response = client.post("/api/v1/files/", data, format="multipart")
        # then
        assert response.status_code == status_code, (data, response.content)
        assert response.json()["error"]["code"] == code
    missing = client.post("/api/v1/files/", {}, format="multipart").json()["error"]
    assert list(missing["fields"]) == ["file"]
    unknown = client.post("/api/v1/files/", {"file": text_file(), "folder": "x"}, format="multipart").json()["error"]
    assert unknown["fields"] == {"folder": ["Unknown field."]}
    as_json = client.post("/api/v1/files/", {"file": "x"}, format="json")
    assert as_json.status_code == 415 and as_json.json()["error"]["code"] == "unsupported_media_type"
    assert stored_count(tenant_a) == 0 and not any(path.is_file() for path in tmp_path.rglob("*"))


def test_a_file_used_by_a_document_is_not_deleted(api_as: Any, fake_llm: FakeOpenAI, tenant_a: Tenant) -> None:
    # given
    with tenant_context(tenant_a):
        owner = User.objects.get(email=owner_email("alpha"))
        kb = knowledge_base_create(name="Manual", slug="manual", embedding_provider=embedding_provider(fake_llm))
        document = document_upload(knowledge_base=kb, upload=ContentFile(b"Some text.", name="a.txt"), user=owner)
    # when
    response = api_as("files").delete(f"/api/v1/files/{document.file_id}/")
    # then
    assert response.status_code == 409 and response.json()["error"]["code"] == "file_in_use"
    assert stored_count(tenant_a) == 1


def test_the_files_scope_is_required(api_as: Any, tenant_a: Tenant) -> None:
    # given
    chat = api_as("chat")
    # when / then
    for response in (chat.get("/api/v1/files/"), chat.post("/api/v1/files/", {"file": text_file()})):
        assert response.status_code == 403
        assert response.json()["error"] == {"code": "missing_scope", "message": "This needs the “files” scope."}
    anonymous = api_client(tenant_a).post("/api/v1/files/", {"file": text_file()})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "not_authenticated"
    assert stored_count(tenant_a) == 0


def test_unknown_and_malformed_ids_answer_404(api_as: Any) -> None:
    # given
    client = api_as("admin")
    # when / then
    for url in (
        "/api/v1/files/00000000-0000-0000-0000-000000000000/",
        "/api/v1/files/0000000000000000000000000000000g/",
        "/api/v1/files/----------------------------------/",
        "/api/v1/files/42/",
        "/api/v1/files/../",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found", url


def test_another_tenant_sees_nothing_of_this_tenants_files(
    api_as: Any, client: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    # given
    a_client = api_as("admin")
    stored = a_client.post("/api/v1/files/", {"file": text_file()}, format="multipart").json()
    url = f"/api/v1/files/{stored['id']}/"
    signed = urlsplit(a_client.get(url).json()["download_url"]).path
    with tenant_context(tenant_b):
        client.force_login(User.objects.get(email=owner_email("beta")))
    b_key = api_as("admin", tenant=tenant_b)
    _, a_raw = key_for(tenant_a, scopes="admin")
    # when / then: B's key and B's session on B's domain do not find A's file, nor its signed link
    assert b_key.get(url).status_code == 404 and b_key.delete(url).status_code == 404
    assert b_key.get("/api/v1/files/").json()["results"] == []
    assert client.get(url, HTTP_HOST=host_of(tenant_b)).status_code == 404
    assert client.delete(url, HTTP_HOST=host_of(tenant_b)).status_code == 404
    assert Client().get(signed, HTTP_HOST=host_of(tenant_b)).status_code == 404
    # ... B's session is nobody on A's domain, and A's key is unknown on B's
    assert client.get(url, HTTP_HOST=host_of(tenant_a)).status_code == 401
    assert client.delete(url, HTTP_HOST=host_of(tenant_a)).status_code == 401
    assert api_client(tenant_b, a_raw).get(url).status_code == 401
    assert stored_count(tenant_a) == 1


def test_an_upload_retried_with_its_idempotency_key_is_stored_once(api_as: Any, tenant_a: Tenant) -> None:
    # given
    client = api_as("files")
    key = {"HTTP_IDEMPOTENCY_KEY": "file-1"}
    # when
    first = client.post("/api/v1/files/", {"file": text_file()}, format="multipart", **key)
    again = client.post("/api/v1/files/", {"file": text_file()}, format="multipart", **key)
    other = client.post("/api/v1/files/", {"file": text_file("other.txt", b"Else.")}, format="multipart", **key)
    # then
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert stored_count(tenant_a) == 1


def test_an_idempotency_key_of_tenant_a_replays_nothing_on_tenant_b(
    api_as: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    # given: tenant A stored a file under an idempotency key
    key = {"HTTP_IDEMPOTENCY_KEY": "shared-key-1"}
    on_a = api_as("files").post("/api/v1/files/", {"file": text_file()}, format="multipart", **key)
    # when: tenant B sends the same request with the same key string
    on_b = api_as("files", tenant=tenant_b).post("/api/v1/files/", {"file": text_file()}, format="multipart", **key)
    # then: B's request runs in B's schema: a file of its own, not A's answer replayed
    assert on_a.status_code == on_b.status_code == 201
    assert on_b.json()["id"] != on_a.json()["id"] and "Idempotent-Replayed" not in on_b
    assert stored_count(tenant_a) == 1 and stored_count(tenant_b) == 1
