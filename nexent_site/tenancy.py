"""Tenant context outside HTTP, in one place.

django-tenants resolves the tenant for HTTP requests (`TenantMiddleware` here: its middleware with a cached
host lookup, `tenant_for_host`). Everything else goes through this module:

- websockets: `TenantWebsocketMiddleware` maps the Host header to a tenant, refuses unknown hosts and
  suspended tenants, and loads the session and user from *that tenant's* schema;
- database work from async code: `run_in_tenant` enters the schema inside the worker thread, because
  each `database_sync_to_async` hop may land on a connection that is set to another schema;
- Celery: `TenantTask` (the default task class of `nexent_site.celery.app`) runs each task in the schema
  that enqueued it and refuses to run anything for a suspended tenant;
- management commands: `tenant_command_context` enters a tenant given its slug, with a clear error.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from channels.auth import AuthMiddleware, get_user
from channels.db import database_sync_to_async
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.core.management.base import CommandError
from django.db import connection
from django_tenants.middleware.main import TenantMainMiddleware
from django_tenants.utils import get_public_schema_name, remove_www, schema_context, tenant_context
from tenant_schemas_celery.task import TenantTask as SchemaTenantTask

from nexent_site.token_cache import TokenCache, tokens_prefetch, tokens_prefetched_forget

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Websocket close codes sent before accepting, so clients can tell why they were refused.
WS_CLOSE_UNKNOWN_HOST = 4404
WS_CLOSE_SUSPENDED = 4403


class TenantSuspendedError(Exception):
    """Raised when work is attempted for a suspended tenant."""


# host -> tenant and schema -> tenant, per process, valid while the platform-wide token in Redis is unchanged:
# every save or delete of a tenant or a domain replaces the token (tenants_changed), so all processes see the
# change on their next request or task.
TENANTS_TOKEN_KEY = "nexent:tenants:token"
_tenant_cache: TokenCache[Tenant | None] = TokenCache("tenant lookups")


# Other token keys a task of a tenant looks up as it starts (the tenant's providers', for a run), registered by their
# apps: read in the same round trip as the tenants' token (TenantTask.get_tenant_for_schema).
TASK_START_TOKEN_KEYS: list[Callable[[Tenant], str]] = []


def tenants_changed() -> None:
    """Forget every process's cached tenant lookups (called on any tenant or domain change)."""
    _tenant_cache.changed(TENANTS_TOKEN_KEY)


def _cached_tenant(kind: str, key: str, load: Callable[[], Tenant | None]) -> Tenant | None:
    """`load()` (run in the public schema), or its cached result while tenants are unchanged. A copy of its own
    for each caller: callers set attributes on it."""

    def load_public() -> Tenant | None:
        with schema_context(get_public_schema_name()):
            return load()

    tenant = _tenant_cache.get(TENANTS_TOKEN_KEY, (kind, key), load_public)
    return copy.copy(tenant) if tenant is not None else None


def tenant_for_host(host: str) -> Tenant | None:
    """The tenant serving `host` (a Host header value, port allowed), or None."""
    from tenants.models import Domain

    hostname = remove_www(host.split(":")[0].strip().lower())
    if not hostname:
        return None

    def load() -> Tenant | None:
        domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
        return domain.tenant if domain else None

    return _cached_tenant("host", hostname, load)


def tenant_for_schema(schema_name: str) -> Tenant | None:
    """The tenant whose schema is `schema_name`, or None."""
    from tenants.models import Tenant

    return _cached_tenant("schema", schema_name, lambda: Tenant.objects.filter(schema_name=schema_name).first())


class TenantMiddleware(TenantMainMiddleware):
    """django-tenants' middleware with the host lookup above (two statements fewer per request)."""

    def get_tenant(self, domain_model: Any, hostname: str) -> Tenant:
        tenant = tenant_for_host(hostname)
        if tenant is None:
            raise domain_model.DoesNotExist
        return tenant


def tenant_redis_scope(tenant: Any = None) -> str:
    """`<schema>:<creation time>`, for keys of a tenant's state in Redis (counters, limits). The creation time
    tells a tenant re-created under the same slug (whose ids start again from 1) from the one before it, so it
    never inherits that one's counts. `tenant`: the current one by default."""
    tenant = tenant if tenant is not None else getattr(connection, "tenant", None)
    schema = getattr(tenant, "schema_name", None) or connection.schema_name
    created = getattr(tenant, "created_at", None)
    return f"{schema}:{int(created.timestamp()) if created else 0}"


async def run_in_tenant(tenant: Tenant, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the sync `func` in a database thread, inside `tenant`'s schema."""

    def call() -> T:
        with tenant_context(tenant):
            return func(*args, **kwargs)

    # Not thread-sensitive: each call is self-contained (it enters the schema and, where it writes, its own
    # transaction), so calls from many connections run in parallel instead of queueing on one thread.
    return await database_sync_to_async(call, thread_sensitive=False)()


class _TenantAuthMiddleware(AuthMiddleware):
    """channels' AuthMiddleware, but the session and user are read from the scope tenant's schema."""

    async def resolve_scope(self, scope: dict) -> None:
        scope["user"]._wrapped = await run_in_tenant(scope["tenant"], get_user.func, scope)


class TenantWebsocketMiddleware:
    """ASGI middleware for websocket scopes: sets `scope["tenant"]`, `scope["session"]` and `scope["user"]`.

    Unknown hosts and the public (platform) domain are refused with close code 4404, suspended tenants with
    4403, before the connection is accepted.
    """

    def __init__(self, inner: Callable) -> None:
        self.inner = CookieMiddleware(SessionMiddleware(_TenantAuthMiddleware(inner)))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> Any:
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        tenant = await database_sync_to_async(tenant_for_host, thread_sensitive=False)(host)
        if tenant is None or tenant.schema_name == get_public_schema_name():
            return await _refuse(receive, send, WS_CLOSE_UNKNOWN_HOST)
        if not tenant.is_active:
            return await _refuse(receive, send, WS_CLOSE_SUSPENDED)
        return await self.inner(dict(scope, tenant=tenant), receive, send)


async def _refuse(receive: Callable, send: Callable, code: int) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": code})


class TenantTask(SchemaTenantTask):
    """Base class of every Nexent task: runs in the enqueuing tenant's schema, never for a suspended one."""

    abstract = True

    @classmethod
    def get_tenant_for_schema(cls, schema_name: str) -> Tenant:
        """Cached like the web's host lookup; a suspension still stops the next task (tenants_changed). The tokens
        of TASK_START_TOKEN_KEYS are read with the tenants' one, in one round trip."""
        from tenants.models import Tenant

        known = _tenant_cache.peek(("schema", schema_name))  # the tenant as last seen here, to name its tokens
        if known is not None and TASK_START_TOKEN_KEYS:
            tokens_prefetch([TENANTS_TOKEN_KEY, *(key(known) for key in TASK_START_TOKEN_KEYS)])
        tenant = tenant_for_schema(schema_name)
        if tenant is None:
            raise Tenant.DoesNotExist(f"no tenant with schema {schema_name!r}")
        return tenant

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if connection.schema_name != get_public_schema_name():
                tenant = connection.tenant
                if not tenant.is_active:
                    logger.warning("refusing task %s: tenant %s is suspended", self.name, tenant.schema_name)
                    raise TenantSuspendedError(f"tenant {tenant.schema_name!r} is suspended; task {self.name} not run")
            return super().__call__(*args, **kwargs)
        finally:
            tokens_prefetched_forget()  # what the task's start read for it is not for the thread's next task


def tenant_by_slug(slug: str, *, allow_suspended: bool = False) -> Tenant:
    """The tenant with this slug, or CommandError with a message a shell user can act on."""
    from tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        tenant = Tenant.objects.exclude(schema_name=get_public_schema_name()).filter(schema_name=slug).first()
    if tenant is None:
        raise CommandError(f"No tenant with slug {slug!r}. List tenants in the platform admin.")
    if not tenant.is_active and not allow_suspended:
        raise CommandError(f"Tenant {slug!r} is suspended.")
    return tenant


@contextmanager
def tenant_command_context(slug: str, *, allow_suspended: bool = False) -> Iterator[Tenant]:
    """For management commands: enter the schema of the tenant `slug` for the duration of the block."""
    tenant = tenant_by_slug(slug, allow_suspended=allow_suspended)
    with tenant_context(tenant):
        yield tenant
