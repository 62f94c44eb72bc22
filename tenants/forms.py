from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.services import user_validate_new
from tenants.models import Tenant
from tenants.services import tenant_validate_new


class TenantCreationForm(forms.ModelForm):
    """Platform admin form for a new tenant: slug, name, limits and the first owner's account."""

    owner_email = forms.EmailField(help_text="The tenant's first owner; logs in on the tenant's own domain.")
    owner_password = forms.CharField(widget=forms.PasswordInput(render_value=False), strip=False)

    class Meta:
        model = Tenant
        fields = ["schema_name", "name", *Tenant.LIMIT_FIELDS]
        labels = {"schema_name": "Slug"}
        help_texts = {
            "schema_name": "Lowercase letters, digits and hyphens. The tenant is served at <slug>.<base domain> "
            "and stored in its own database schema of that name."
        }

    def validate_unique(self) -> None:
        # tenant_validate_new (in clean) checks slug and domain uniqueness with a clearer message.
        pass

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            tenant_validate_new(slug=data.get("schema_name", ""), name=data.get("name", ""))
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error("schema_name" if field == "slug" else field, messages)
        if data.get("owner_email") and data.get("owner_password") is not None:
            try:
                user_validate_new(
                    email=data["owner_email"], password=data["owner_password"], role=User.Role.OWNER, check_unique=False
                )
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    self.add_error(f"owner_{field}", messages)
        return data
