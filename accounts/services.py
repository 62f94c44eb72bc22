"""Writes for users. All functions act on the schema the connection is in (a tenant's or `public`)."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction

from accounts.models import User


def role_flags(role: str) -> dict[str, bool]:
    """Owners and admins manage their tenant in its admin site; members only use the chat pages."""
    staff = role in User.STAFF_ROLES
    return {"is_staff": staff, "is_superuser": staff}


def _normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ValidationError({"email": exc.messages}) from exc
    return email


def user_validate_new(*, email: str, password: str, role: str, check_unique: bool = True) -> str:
    """Check a new user's fields without writing; returns the normalized e-mail. Errors are keyed by field.

    `check_unique=False` skips the look-up in the current schema (for a tenant whose schema is not made yet).
    """
    email = _normalize_email(email)
    errors: dict[str, list[str]] = {}
    if role not in User.Role.values:
        errors["role"] = [f"Unknown role {role!r}; choose one of {', '.join(User.Role.values)}."]
    if check_unique and User.objects.filter(email__iexact=email).exists():
        errors["email"] = ["A user with this e-mail already exists here."]
    try:
        validate_password(password, User(email=email))
    except ValidationError as exc:
        errors["password"] = exc.messages
    if errors:
        raise ValidationError(errors)
    return email


def _check_user_limit() -> None:
    tenant = getattr(connection, "tenant", None)
    limit = getattr(tenant, "max_users", 0)
    if limit and User.objects.filter(is_active=True).count() >= limit:
        raise ValidationError({"email": [f"This tenant has reached its limit of {limit} users."]})


@transaction.atomic
def user_create(*, email: str, password: str, role: str = User.Role.MEMBER, full_name: str = "") -> User:
    """Create a user in the current schema with `role`; validates e-mail, password, role and the user limit."""
    email = user_validate_new(email=email, password=password, role=role)
    _check_user_limit()
    user = User(email=email, full_name=full_name, role=role, **role_flags(role))
    user.set_password(password)
    user.save()
    return user


def _other_active_owners(user: User) -> bool:
    return User.objects.filter(role=User.Role.OWNER, is_active=True).exclude(pk=user.pk).exists()


def user_change_validate(
    *, user: User, role: str | None = None, is_active: bool = True, deleting: bool = False
) -> None:
    """Raise field-keyed errors if the change is not allowed. A tenant always keeps an active owner."""
    role = role or user.role
    if role not in User.Role.values:
        raise ValidationError({"role": [f"Unknown role {role!r}."]})
    loses_owner = role != User.Role.OWNER or not is_active or deleting
    if user.role == User.Role.OWNER and user.is_active and loses_owner and not _other_active_owners(user):
        field = "role" if role != User.Role.OWNER else "is_active"
        raise ValidationError({field: ["This is the tenant's last active owner; make someone else owner first."]})


@transaction.atomic
def user_update(
    *, user: User, role: str | None = None, is_active: bool | None = None, full_name: str | None = None
) -> User:
    """Change a tenant user's role, activity or name; the admin access flags follow the role."""
    role = role or user.role
    is_active = user.is_active if is_active is None else is_active
    user_change_validate(user=user, role=role, is_active=is_active)
    user.role, user.is_active = role, is_active
    if full_name is not None:
        user.full_name = full_name
    for flag, value in role_flags(role).items():
        setattr(user, flag, value)
    user.save(update_fields=["role", "is_active", "full_name", "is_staff", "is_superuser"])
    return user


def user_delete(*, user: User) -> None:
    user_change_validate(user=user, deleting=True)
    user.delete()


def platform_superuser_ensure(*, email: str, password: str) -> tuple[User, bool]:
    """In the public schema: create the platform superuser if missing. Returns (user, created)."""
    email = _normalize_email(email)
    existing = User.objects.filter(email__iexact=email).first()
    if existing:
        return existing, False
    user = User(email=email, role=User.Role.OWNER, is_staff=True, is_superuser=True)
    user.set_password(password)
    user.save()
    return user, True
