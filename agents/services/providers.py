"""Model providers: save with an encrypted key, test connectivity, pick defaults, bundled local models."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import ConnectionStatus, ModelProvider, ProviderKind
from nexent_site.errors import ApplicationError
from nexent_site.integrations.openai_compat import ProviderConfig, ProviderError, provider_probe
from nexent_site.tenancy import tenant_redis_scope
from nexent_site.token_cache import TokenCache

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

# Each run's chat providers, per process, until any provider of the tenant changes (agents.signals): a run
# started without a query for them.
chat_configs_cache: TokenCache[dict[str, ProviderConfig]] = TokenCache("chat providers")


def key_hint(api_key: str) -> str:
    return api_key[-4:] if len(api_key) >= 12 else ""


@transaction.atomic
def provider_save(*, provider: ModelProvider, api_key: str | None = None) -> ModelProvider:
    """Save `provider`. `api_key=None` keeps the stored key; "" removes it. Only one default per kind."""
    if api_key is not None:
        provider.api_key = api_key
        provider.api_key_hint = key_hint(api_key)
    if provider.is_default:
        ModelProvider.objects.filter(kind=provider.kind, is_default=True).exclude(pk=provider.pk).update(
            is_default=False
        )
    provider.full_clean()
    provider.save()
    return provider


def provider_delete(*, provider: ModelProvider) -> None:
    """Delete a provider nothing uses; one that agents or knowledge bases still use is refused (409),
    naming them."""
    users = [f"agent “{slug}”" for slug in provider.agents.values_list("slug", flat=True)[:5]]
    users += [f"knowledge base “{slug}”" for slug in provider.knowledge_bases.values_list("slug", flat=True)[:5]]
    if users:
        raise ApplicationError(
            f"{provider.name} is in use by {', '.join(users)}; point them at another provider first.",
            code="in_use",
            status=409,
        )
    provider.delete()


def provider_config(provider: ModelProvider) -> ProviderConfig:
    return ProviderConfig.from_provider(provider)


def providers_token_key(tenant: Tenant | None = None) -> str:
    """The Redis key of the current tenant's (or `tenant`'s) providers' token (see chat_provider_configs)."""
    return f"nexent:{tenant_redis_scope(tenant)}:providers:token"


def providers_changed(token_key: str | None = None) -> None:
    """Every process forgets the cached providers of the current tenant (or of `token_key`'s)."""
    chat_configs_cache.changed(token_key or providers_token_key())


def chat_provider_configs(ids: set[int]) -> dict[str, ProviderConfig]:
    """The chat providers `ids` of the current tenant, and its default chat provider as "default" (its id too).
    Cached per process until a provider of the tenant changes; a copy for each caller."""

    def load() -> dict[str, ProviderConfig]:
        configs: dict[str, ProviderConfig] = {}
        for provider in ModelProvider.objects.filter(Q(pk__in=ids) | Q(is_default=True), kind=ProviderKind.CHAT):
            config = provider_config(provider)
            if provider.pk in ids:
                configs[str(provider.pk)] = config
            if provider.is_default:
                configs["default"] = config
        return configs

    token_key = providers_token_key()
    return dict(chat_configs_cache.get(token_key, (token_key, frozenset(ids)), load))


def provider_test(*, provider: ModelProvider) -> ModelProvider:
    """A real call of the provider's kind; stores available/unavailable with the reason and time.
    For embeddings the vector dimension is recorded."""
    try:
        facts = provider_probe(provider_config(provider))
    except ProviderError as exc:
        provider.status, provider.status_error = ConnectionStatus.UNAVAILABLE, exc.message
        logger.info("provider %s unavailable: %s", provider.name, exc.message)
    else:
        provider.status, provider.status_error = ConnectionStatus.AVAILABLE, ""
        if "dimension" in facts:
            provider.dimension = facts["dimension"]
    provider.status_checked_at = timezone.now()
    if provider.pk:
        provider.save(update_fields=["status", "status_error", "status_checked_at", "dimension"])
    return provider


def provider_default(kind: str) -> ModelProvider | None:
    return ModelProvider.objects.filter(kind=kind, is_default=True).first()


def builtin_provider_settings() -> list[dict]:
    """The providers a new tenant gets: the bundled local models, or those named by LLM_* / EMBEDDING_*."""
    chat = {
        "name": "Local chat (SmolLM2-135M)" if not settings.LLM_BASE_URL else "Default chat",
        "kind": ProviderKind.CHAT,
        "base_url": settings.LLM_BASE_URL or settings.LOCAL_LLM_URL,
        "model_name": settings.LLM_MODEL or "smollm2-135m-instruct",
        "api_key": settings.LLM_API_KEY,
        "context_window": settings.LLM_CONTEXT_WINDOW,
        "tool_choice": "required" if settings.LLM_BASE_URL else "auto",
        "stream_tool_calls": bool(settings.LLM_BASE_URL),
        "timeout_s": 120,
    }
    embedding = {
        "name": "Local embeddings (multilingual-e5-small)" if not settings.EMBEDDING_BASE_URL else "Default embeddings",
        "kind": ProviderKind.EMBEDDING,
        "base_url": settings.EMBEDDING_BASE_URL or settings.LOCAL_EMBEDDING_URL,
        "model_name": settings.EMBEDDING_MODEL or "multilingual-e5-small",
        "api_key": settings.EMBEDDING_API_KEY,
        "context_window": 512,
        "dimension": settings.EMBEDDING_DIMENSION or (384 if not settings.EMBEDDING_BASE_URL else None),
        "embedding_input_type": settings.EMBEDDING_INPUT_TYPE or not settings.EMBEDDING_BASE_URL,
    }
    return [chat, embedding]


@transaction.atomic
def providers_ensure_defaults() -> list[ModelProvider]:
    """Idempotent: give the current tenant default chat and embedding providers if it has none."""
    created = []
    for values in builtin_provider_settings():
        if provider_default(values["kind"]) is not None:
            continue
        api_key = values.pop("api_key", "")
        provider = ModelProvider(is_default=True, is_builtin=not api_key, **values)
        created.append(provider_save(provider=provider, api_key=api_key))
    return created
