"""Stored files: sniffed types, limits, quota, per-tenant storage keys, downloads only for those allowed,
signed links bound to their tenant, and the same on a local S3-compatible server (moto's threaded server
speaks the real S3 HTTP API; it stands in for S3/MinIO)."""

import hashlib
import io
import zipfile
from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create
from conftest import PASSWORD, host_of, owner_email
from files.models import StoredFile
from files.services import file_delete, file_open, file_signed_url, file_store
from files.storage import files_storage
from nexent_site.errors import ApplicationError
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def isolated_storage(tmp_path: object) -> Iterator[None]:
    with override_settings(FILES_ROOT=str(tmp_path)):
        files_storage.cache_clear()
        yield
    files_storage.cache_clear()


def docx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("report.pdf", b"%PDF-1.7\n...", "application/pdf"),
        ("notes.txt", "plain text, 中文也可以".encode(), "text/plain"),
        ("data.json", b'{"a": [1, 2]}', "application/json"),
        ("page.html", b"<!DOCTYPE html><html><body>x</body></html>", "text/html"),
        ("readme.md", b"# Title\n\ntext", "text/markdown"),
        ("claims-to-be.pdf", b"just text really", "text/plain"),  # the name does not decide
    ],
)
def test_types_are_sniffed_from_the_bytes(tenant_a: Tenant, name: str, content: bytes, expected: str) -> None:
    with tenant_context(tenant_a):
        stored = file_store(upload=SimpleUploadedFile(name, content, content_type="application/x-lies"))
        assert stored.content_type == expected
        assert stored.sha256 == hashlib.sha256(content).hexdigest()
        assert stored.storage_key == f"alpha/{stored.pk}"
        assert file_open(stored).read() == content


def test_a_docx_is_recognised(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        stored = file_store(upload=SimpleUploadedFile("x.docx", docx_bytes()))
    assert stored.content_type.endswith("wordprocessingml.document")


@pytest.mark.parametrize(
    ("upload", "code"),
    [
        (SimpleUploadedFile("empty.txt", b""), "empty_file"),
        (SimpleUploadedFile("tool.exe", b"MZ\x90\x00" + b"\x00" * 200), "unsupported_type"),
        (SimpleUploadedFile("big.txt", b"x" * 2048), "file_too_large"),
    ],
)
@override_settings(FILES_MAX_BYTES=1024)
def test_bad_uploads_are_refused_and_nothing_is_stored(tenant_a: Tenant, upload: object, code: str) -> None:
    with tenant_context(tenant_a):
        with pytest.raises(ApplicationError) as excinfo:
            file_store(upload=upload)
        assert excinfo.value.code == code
        assert not StoredFile.objects.exists()


def test_the_tenant_quota_is_enforced(tenant_a: Tenant) -> None:
    tenant_a.max_storage_bytes = 100
    with tenant_context(tenant_a):
        file_store(upload=SimpleUploadedFile("a.txt", b"a" * 60))
        with pytest.raises(ApplicationError) as excinfo:
            file_store(upload=SimpleUploadedFile("b.txt", b"b" * 60))
        assert excinfo.value.code == "quota_exceeded" and "100 bytes" in excinfo.value.message
        assert StoredFile.objects.count() == 1


def test_downloads_only_for_the_owner_or_staff(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    with tenant_context(tenant_a):
        member = user_create(email="member@alpha.test", password=PASSWORD)
        user_create(email="other@alpha.test", password=PASSWORD)
        stored = file_store(upload=SimpleUploadedFile("mine.txt", b"private words"), owner=member)
    url, host = f"/files/{stored.pk}/download/", {"HTTP_HOST": host_of(tenant_a)}

    def as_user(email: str) -> Client:
        browser = Client()
        browser.post("/accounts/login/", {"username": email, "password": PASSWORD}, **host)
        return browser

    response = as_user("member@alpha.test").get(url, **host)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"private words"
    assert response["Content-Disposition"].startswith('attachment; filename="mine.txt"')
    assert response["X-Content-Type-Options"] == "nosniff"
    assert as_user(owner_email("alpha")).get(url, **host).status_code == 200  # staff
    assert as_user("other@alpha.test").get(url, **host).status_code == 404
    assert Client().get(url, **host).status_code == 302  # to the login page
    owner_b = Client()
    owner_b.post(
        "/accounts/login/", {"username": owner_email("beta"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_b)
    )
    assert owner_b.get(url, HTTP_HOST=host_of(tenant_b)).status_code == 404
    for guess in ("/files/../alpha/download/", f"/files/alpha%2F{stored.pk}/download/", "/files/not-a-uuid/download/"):
        assert as_user(owner_email("alpha")).get(guess, **host).status_code == 404


def test_signed_links_work_briefly_and_only_on_their_tenant(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    with tenant_context(tenant_a):
        stored = file_store(upload=SimpleUploadedFile("shared.txt", b"shared words"))
        link = file_signed_url(stored_file=stored)
    response = Client().get(link, HTTP_HOST=host_of(tenant_a))
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"shared words"
    assert Client().get(link, HTTP_HOST=host_of(tenant_b)).status_code == 404
    assert Client().get(link[:-3] + "abc/", HTTP_HOST=host_of(tenant_a)).status_code == 404
    with override_settings(FILES_SIGNED_URL_TTL_S=-1):
        assert Client().get(link, HTTP_HOST=host_of(tenant_a)).status_code == 404


def test_deleting_removes_the_bytes(tenant_a: Tenant, django_capture_on_commit_callbacks: object) -> None:
    with tenant_context(tenant_a):
        stored = file_store(upload=SimpleUploadedFile("gone.txt", b"soon gone"))
        key = stored.storage_key
        assert files_storage().exists(key)
        with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
            file_delete(stored_file=stored)
        assert not StoredFile.objects.filter(pk=stored.pk).exists()
    assert not files_storage().exists(key)


def test_the_admin_uploads_and_lists_files(client: Client, tenant_a: Tenant) -> None:
    host = {"HTTP_HOST": host_of(tenant_a)}
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, **host)
    response = client.post("/admin/files/storedfile/add/", {"upload": SimpleUploadedFile("a.md", b"# hi")}, **host)
    assert response.status_code == 302
    refused = client.post(
        "/admin/files/storedfile/add/", {"upload": SimpleUploadedFile("x.exe", b"MZ\x90\x00" * 50)}, **host
    )
    assert refused.status_code == 200 and "not accepted" in refused.content.decode()
    listing = client.get("/admin/files/storedfile/", **host).content.decode()
    assert "a.md" in listing and "x.exe" not in listing
    with tenant_context(tenant_a):
        assert StoredFile.objects.get().owner == User.objects.get(email=owner_email("alpha"))


def test_s3_storage_against_a_local_s3_server(tenant_a: Tenant, tenant_b: Tenant) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
        ).create_bucket(Bucket="nexent-files")
        settings = {
            "FILES_S3_BUCKET": "nexent-files",
            "FILES_S3_ENDPOINT_URL": endpoint,
            "FILES_S3_ACCESS_KEY": "test",
            "FILES_S3_SECRET_KEY": "test",
            "FILES_S3_REGION": "us-east-1",
            "FILES_S3_PREFIX": "nexent",
        }
        with override_settings(**settings):
            files_storage.cache_clear()
            with tenant_context(tenant_a):
                stored = file_store(upload=SimpleUploadedFile("cloud.txt", b"in the bucket"))
                assert file_open(stored).read() == b"in the bucket"
            listed = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id="test",
                aws_secret_access_key="test",
                region_name="us-east-1",
            ).list_objects_v2(Bucket="nexent-files")
            assert [o["Key"] for o in listed["Contents"]] == [f"nexent/alpha/{stored.pk}"]
            files_storage().delete(stored.storage_key)
            assert not files_storage().exists(stored.storage_key)
    finally:
        files_storage.cache_clear()
        server.stop()


def test_deleting_a_tenant_deletes_its_files(tenant_b: Tenant, django_capture_on_commit_callbacks: object) -> None:
    from django.db import connection

    from tenants.services import tenant_create, tenant_delete

    doomed = tenant_create(slug="doomed-files", name="Doomed", owner_email="o@doomed.test", owner_password=PASSWORD)
    with tenant_context(doomed):
        stored = file_store(upload=SimpleUploadedFile("bye.txt", b"bye"))
    with tenant_context(tenant_b):
        kept = file_store(upload=SimpleUploadedFile("stay.txt", b"stay"))
    with connection.cursor() as cursor:  # in production creation and deletion are separate transactions
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        tenant_delete(tenant=doomed)

    assert not files_storage().exists(stored.storage_key)
    assert files_storage().exists(kept.storage_key)
