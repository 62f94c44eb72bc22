from typing import Any

from django.contrib.auth.forms import BaseUserCreationForm
from django.contrib.auth.forms import UserChangeForm as DjangoUserChangeForm
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.services import user_change_validate, user_validate_new


class UserAddForm(BaseUserCreationForm):
    """Admin form for a new user; the account is written by `accounts.services.user_create`."""

    class Meta:
        model = User
        fields = ("email", "full_name", "role")

    def validate_unique(self) -> None:
        # user_validate_new (in clean) checks e-mail uniqueness case-insensitively.
        pass

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        password = data.get("password1")
        if data.get("email") and password:
            try:
                user_validate_new(email=data["email"], password=password, role=data.get("role", User.Role.MEMBER))
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    target = "password1" if field == "password" else field
                    if target in self.fields and target not in self.errors:
                        self.add_error(target, messages)
        return data


class UserChangeForm(DjangoUserChangeForm):
    class Meta(DjangoUserChangeForm.Meta):
        model = User
        fields = ("email", "password", "full_name", "role", "is_active")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.instance.pk:
            return data
        original = User.objects.get(pk=self.instance.pk)
        try:
            user_change_validate(
                user=original, role=data.get("role", original.role), is_active=data.get("is_active", True)
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                self.add_error(field, messages)
        return data
