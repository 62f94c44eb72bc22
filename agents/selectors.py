from __future__ import annotations

import uuid
from typing import Any

from agents.models import AgentRun


def run_get_for_user(*, run_id: str, user: Any) -> AgentRun | None:
    """The run if `user` may watch it: tenant staff see every run of their tenant, others only their own.
    Any malformed or foreign id gives None, like a missing one."""
    try:
        uuid.UUID(str(run_id))
    except ValueError:
        return None
    runs = AgentRun.objects.select_related("agent")
    if not user.is_staff:
        runs = runs.filter(user_email=user.email)
    return runs.filter(pk=run_id).first()
