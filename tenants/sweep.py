"""Scheduled work that runs in every tenant's schema, one tenant at a time (beat's watchdogs and clean-ups)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django_tenants.utils import get_public_schema_name, get_tenant_model, tenant_context

logger = logging.getLogger(__name__)


def tenants_sweep(work: Callable[[], Any], *, active_only: bool = True) -> dict[str, Any]:
    """`work()` in each tenant's schema (active tenants only, unless `active_only=False`); what it returned, by
    schema. A tenant whose work fails is logged and left out: the tenants after it still get theirs."""
    tenants = get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).order_by("pk")
    if active_only:
        tenants = tenants.filter(status="active")
    results: dict[str, Any] = {}
    for tenant in tenants:
        try:
            with tenant_context(tenant):
                results[tenant.schema_name] = work()
        except Exception:
            logger.exception("scheduled %s failed in tenant %s", getattr(work, "__name__", "work"), tenant.schema_name)
    return results
