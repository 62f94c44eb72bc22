"""`insert_sql` and `update_sql` (nexent_site/statements.py) against real PostgreSQL: the `INSERT` and `UPDATE` they
write by hand store what Django's `bulk_create()` and `save(update_fields=…)` store; the `UPDATE` matches rows as
Django's lookups do, is the same SQL whatever the values (one prepared statement), and reaches only the current
tenant's rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone
from django_tenants.utils import tenant_context

from agents.models import Agent, AgentRun, RunStatus, RunStep
from nexent_site.statements import insert_sql, marked_saved, update_sql
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

FIELDS = ["status", "error", "finished_at", "output", "tokens_out", "usage_estimated", "ttft_ms", "input", "version"]


def _run(agent: Agent, **values: object) -> AgentRun:
    return AgentRun.objects.create(agent=agent, spec={}, trigger="chat", status=RunStatus.RUNNING, **values)


def _execute(sql: tuple[str, tuple]) -> list[tuple]:
    with connection.prepared_cursor() as cursor:  # as a Statement runs it: bound on the server
        cursor.execute(*sql)
        return cursor.fetchall() if cursor.description else []


def _stored(run: AgentRun) -> dict:
    return AgentRun.objects.filter(pk=run.pk).values(*FIELDS).get()


def test_an_update_stores_what_save_with_update_fields_stores(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Updater", slug="updater")
        # given: two runs with a value in every field, changed the same way (text, time, integers, a boolean,
        # JSON, and None for a time and a foreign key)
        by_hand, by_django = (_run(agent, ttft_ms=5, input=[{"role": "user", "content": "hi"}]) for _ in range(2))
        finished = timezone.now() - timedelta(minutes=3)
        for run in (by_hand, by_django):
            run.status, run.error, run.finished_at, run.output = RunStatus.FAILED, 'it\'s "quoted"', finished, "ü"
            run.tokens_out, run.usage_estimated, run.ttft_ms = 41, True, None
            run.input = [{"role": "assistant", "content": "{'not': 'sql'}"}]
            run.version = None

        # when: one is written by update_sql, the other by Django
        _execute(update_sql(by_hand, FIELDS))
        by_django.save(update_fields=FIELDS)

        # then: both rows hold the same
        assert _stored(by_hand) == _stored(by_django)
        assert _stored(by_hand)["ttft_ms"] is None and _stored(by_hand)["error"] == 'it\'s "quoted"'


def test_an_update_writes_only_a_row_its_lookups_match_and_returns_its_id(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Matcher", slug="matcher")
        run = _run(agent)
        run.output = "written"
        active = [RunStatus.QUEUED, RunStatus.RUNNING]

        # a list lookup the row matches: written, its id returned
        assert _execute(update_sql(run, ["output"], where={"status__in": active}, returning=True)) == [(run.pk,)]
        assert _stored(run)["output"] == "written"

        # an equality lookup it does not match: nothing written, nothing returned
        run.output = "not written"
        assert _execute(update_sql(run, ["output"], where={"status": RunStatus.SUCCEEDED}, returning=True)) == []
        assert _stored(run)["output"] == "written"


def test_the_sql_is_the_same_whatever_the_values_so_one_statement_is_prepared(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Same", slug="same")
        first, second = _run(agent, ttft_ms=3), _run(agent)
        second.ttft_ms, second.error = None, "x" * 500  # a NULL, and another length
        sql_of = [
            update_sql(run, ["ttft_ms", "error"], where={"status__in": statuses})[0]
            for run, statuses in ((first, ["running"]), (second, ["running", "queued", "failed"]))
        ]
        assert sql_of[0] == sql_of[1]


def test_a_lookup_it_does_not_write_itself_matches_as_djangos_does(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Null", slug="null")
        unfinished, finished = _run(agent), _run(agent, finished_at=timezone.now())
        for run in (unfinished, finished):
            run.output = "closed"
            # `finished_at=None` is `IS NULL` (Django's compiler writes it), a foreign key matched by its instance
            _execute(update_sql(run, ["output"], where={"finished_at": None, "agent": agent}))
        assert (_stored(unfinished)["output"], _stored(finished)["output"]) == ("closed", "")


def test_an_expression_value_is_written_through_djangos_compiler(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Expression", slug="expression")
        run = _run(agent, tokens_in=7)
        run.tokens_out = F("tokens_in") + 1
        _execute(update_sql(run, ["tokens_out"]))
        assert AgentRun.objects.get(pk=run.pk).tokens_out == 8


def test_an_update_reaches_only_the_current_tenants_row(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """The SQL names no schema: the same statement, prepared once on the connection, writes the row of the
    tenant it runs for. Tenant B's run is given tenant A's run's id, so the id alone would reach both."""
    with tenant_context(tenant_a):
        run_a = _run(Agent.objects.create(name="Mine", slug="mine"), output="A's")
    with tenant_context(tenant_b):
        run_b = _run(Agent.objects.create(name="Theirs", slug="theirs"), output="B's", id=run_a.pk)

    run_a.output = "changed by A"
    with tenant_context(tenant_a):
        assert _execute(update_sql(run_a, ["output"], returning=True)) == [(run_a.pk,)]
    with tenant_context(tenant_b):
        assert AgentRun.objects.get(pk=run_b.pk).output == "B's"
    with tenant_context(tenant_a):
        assert AgentRun.objects.get(pk=run_a.pk).output == "changed by A"


def test_an_insert_stores_what_bulk_create_stores_and_returns_the_ids_in_order(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        run_by_hand, run_by_django = (_run(Agent.objects.create(name=f"Ins {n}", slug=f"ins-{n}")) for n in (1, 2))

        def steps(run: AgentRun) -> list[RunStep]:
            return [
                RunStep(run=run, seq=1, type="step_started", data={"step": 1}),
                RunStep(run=run, seq=2, type="tool_call", agent_path="helper", data={"arguments": {"q": "it's"}}),
            ]

        by_hand = steps(run_by_hand)
        ids = [row[0] for row in _execute(insert_sql(RunStep, by_hand, returning=True))]
        marked_saved(by_hand, ids)
        RunStep.objects.bulk_create(steps(run_by_django))

        columns = ["seq", "type", "agent_path", "data"]
        stored = [
            list(RunStep.objects.filter(run=run).order_by("seq").values(*columns))
            for run in (run_by_hand, run_by_django)
        ]
        assert stored[0] == stored[1]
        assert [RunStep.objects.get(pk=step.pk).seq for step in by_hand] == [1, 2]  # each object has its own row's id
        assert all(step.created_at is not None for step in by_hand)  # auto_now_add, as Django sets it


def test_an_insert_that_ignores_conflicts_writes_and_returns_nothing_for_a_row_already_there(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        run = _run(Agent.objects.create(name="Twice", slug="twice"))
        first = [RunStep(run=run, seq=1, type="step_started", data={})]
        again = [RunStep(run=run, seq=1, type="final_answer", data={})]  # the same (run, seq): unique

        assert len(_execute(insert_sql(RunStep, first, returning=True, ignore_conflicts=True))) == 1
        assert _execute(insert_sql(RunStep, again, returning=True, ignore_conflicts=True)) == []
        assert list(RunStep.objects.filter(run=run).values_list("type", flat=True)) == ["step_started"]
