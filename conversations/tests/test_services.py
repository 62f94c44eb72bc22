"""Chat services against real PostgreSQL: writing the assistant message from its finished run."""

from __future__ import annotations

import pytest
from django_tenants.utils import tenant_context

from accounts.models import User
from agents.models import Agent, AgentRun, RunStatus, RunStep
from conftest import owner_email
from conversations.models import Conversation, Message
from conversations.services import message_finalize
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_finalizing_a_message_again_rebuilds_its_units_and_citations_once(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        # given: a pending answer whose run finished with a step and a cited final answer
        agent = Agent.objects.create(name="Finaliser", slug="finaliser")
        run = AgentRun.objects.create(
            agent=agent, spec={}, trigger="chat", status=RunStatus.SUCCEEDED, output="The answer [1].", tokens_out=4
        )
        citation = {"index": 1, "document_id": 3, "document_title": "Handbook", "chunk_id": 9, "text": "passage"}
        RunStep.objects.bulk_create(
            [
                RunStep(run=run, seq=2, type="step_started", data={"step": 1}),
                RunStep(run=run, seq=3, type="final_answer", data={"text": run.output, "citations": [citation]}),
            ]
        )
        conversation = Conversation.objects.create(user=User.objects.get(email=owner_email("alpha")), agent=agent)
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING, run=run
        )

        # when
        message_finalize(message=message, run=run)

        # then
        stored = Message.objects.get(pk=message.pk)
        assert (stored.status, stored.content, stored.tokens_out) == ("completed", "The answer [1].", 4)
        assert [unit.kind for unit in stored.units.all()] == ["step", "final_answer"]
        assert [(c.index, c.document_title) for c in stored.citations.all()] == [(1, "Handbook")]

        # when: finalized again (the task delivered twice), from the message as stored now
        message_finalize(message=Message.objects.get(pk=message.pk))

        # then: the same units and citations, not twice as many
        assert [unit.kind for unit in stored.units.all()] == ["step", "final_answer"]
        assert stored.citations.count() == 1
