"""Virus scanning with clamd when CLAMAV_URL is set. clamd is an external daemon that cannot run here (its
signatures cannot be fetched): `FakeClamd` stands in for it, speaking clamd's real INSTREAM protocol and
flagging the EICAR test string as ClamAV does."""

from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django_tenants.utils import tenant_context

from files.models import StoredFile
from files.services import file_store
from files.storage import files_storage
from nexent_site.errors import ApplicationError
from nexent_site.testing.fake_clamd import EICAR, FakeClamd

pytestmark = pytest.mark.django_db


@pytest.fixture
def clamd(tmp_path: object) -> Iterator[FakeClamd]:
    server = FakeClamd()
    with override_settings(CLAMAV_URL=server.url, CLAMAV_TIMEOUT_S=5, FILES_ROOT=str(tmp_path)):
        files_storage.cache_clear()
        yield server
    files_storage.cache_clear()
    server.stop()


def test_clean_files_are_scanned_then_stored(clamd: FakeClamd, tenant_a: object) -> None:
    with tenant_context(tenant_a):
        stored = file_store(upload=SimpleUploadedFile("notes.txt", b"nothing to see here"))
        assert clamd.server.scanned == 1
        assert files_storage().open(stored.storage_key).read() == b"nothing to see here"


def test_an_infected_file_is_refused_with_the_signature_and_nothing_is_stored(
    clamd: FakeClamd, tenant_a: object
) -> None:
    with tenant_context(tenant_a):
        with pytest.raises(ApplicationError) as refused:
            file_store(upload=SimpleUploadedFile("invoice.txt", b"hello " + EICAR + b" bye"))
        assert refused.value.code == "infected" and "EICAR" in refused.value.message
        assert "invoice.txt" in refused.value.message
        assert not StoredFile.objects.filter(original_name="invoice.txt").exists()


def test_a_scanner_error_or_outage_refuses_the_upload(clamd: FakeClamd, tenant_a: object) -> None:
    with tenant_context(tenant_a):
        clamd.server.answer_error = True
        with pytest.raises(ApplicationError) as errored:
            file_store(upload=SimpleUploadedFile("a.txt", b"fine"))
        assert errored.value.code == "scan_failed" and "ERROR" in errored.value.message
        clamd.stop()  # the scanner goes away: fail closed
        with pytest.raises(ApplicationError) as down:
            file_store(upload=SimpleUploadedFile("b.txt", b"fine"))
        assert down.value.code == "scan_failed" and down.value.status == 503
        assert not StoredFile.objects.filter(original_name__in=["a.txt", "b.txt"]).exists()
