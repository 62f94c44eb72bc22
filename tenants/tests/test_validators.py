import pytest
from django.core.exceptions import ValidationError

from tenants.validators import validate_tenant_slug


@pytest.mark.parametrize("slug", ["acme", "a", "acme-corp", "team42", "x" * 32, "a1-b2-c3"])
def test_valid_slugs_are_accepted(slug: str) -> None:
    validate_tenant_slug(slug)


@pytest.mark.parametrize(
    "slug",
    ["", "Acme", "1acme", "-acme", "acme-", "ac--me", "ac_me", "ac.me", "ac me", "acmé", "x" * 33, "a/../b"],
)
def test_invalid_slugs_are_refused_with_a_clear_message(slug: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        validate_tenant_slug(slug)
    assert excinfo.value.code == "invalid_slug"
    assert "lowercase letters" in excinfo.value.messages[0]


@pytest.mark.parametrize("slug", ["public", "www", "admin", "api", "static", "mcp", "pgsql"])
def test_reserved_slugs_are_refused(slug: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        validate_tenant_slug(slug)
    assert excinfo.value.code == "reserved_slug"
    assert "reserved" in excinfo.value.messages[0]
