from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from accounts.models import User
from api.models import ApiKey
from api.scopes import Scope
from api.services import apikey_validate


class ApiKeyCreateForm(forms.ModelForm):
    """Checks a new key with the service's rules; the admin then creates it through `apikey_create`."""

    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["name", "user", "scopes", "expires_at", "requests_per_minute", "monthly_token_limit"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = User.objects.filter(is_active=True)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("user") is None or "scopes" not in cleaned or "name" not in cleaned:
            return cleaned
        try:
            cleaned["scopes"] = apikey_validate(
                user=cleaned["user"],
                name=cleaned["name"],
                scopes=cleaned["scopes"],
                expires_at=cleaned.get("expires_at"),
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


class ApiKeyChangeForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "expires_at", "requests_per_minute", "monthly_token_limit"]
