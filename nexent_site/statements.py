"""Django's own `INSERT` and `UPDATE` SQL for a write path that puts several of them in one statement (one round
trip, in `WITH` parts), where each alone would wait for a CPU and a connection turn under load.

The SQL and its parameters come from Django's compilers: every field as `save()` and `bulk_create()` write it
(defaults, `auto_now_add`, JSON adaptation). The caller joins the parts and reads what they return."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import connection
from django.db.models import Field, Model
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery, UpdateQuery

Sql = tuple[str, tuple[Any, ...]]


@functools.cache
def insert_fields(model: type[Model]) -> list[Field]:
    """The columns Django's `INSERT` writes for `model` (the database makes the auto id)."""
    opts = model._meta
    fields = [f for f in opts.concrete_fields if not f.generated and f is not opts.auto_field]
    custom = [f.name for f in fields if hasattr(f, "get_placeholder")]
    if custom:  # not built by hand: Django's compiler would write these with a placeholder of their own
        raise TypeError(f"{model.__name__} fields with custom placeholders: {custom}")
    return fields


def insert_sql(
    model: type[Model], objs: Sequence[Model], *, returning: bool = False, ignore_conflicts: bool = False
) -> Sql:
    """The `INSERT` of `objs` (every concrete field but the auto id), returning their ids if `returning`; with
    `ignore_conflicts`, a row that would break a unique constraint is left out (`ON CONFLICT DO NOTHING`), and
    returns no id."""
    query = InsertQuery(model, on_conflict=OnConflict.IGNORE if ignore_conflicts else None)
    query.insert_values(insert_fields(model), objs)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [model._meta.pk] if returning else None
    [(sql, params)] = compiler.as_sql()
    return sql, tuple(params)


def update_sql(obj: Model, fields: Sequence[str]) -> Sql:
    """The `UPDATE` of `obj`'s row with its values of `fields` (as `obj.save(update_fields=fields)` writes them)."""
    model = type(obj)
    query = UpdateQuery(model)
    chosen = [model._meta.get_field(name) for name in fields]
    query.add_update_fields([(field, None, field.pre_save(obj, False)) for field in chosen])
    query.add_filter("pk", obj.pk)
    sql, params = query.get_compiler(connection=connection).as_sql()
    return sql, tuple(params)


def marked_saved(objs: Sequence[Model], ids: Sequence[Any]) -> None:
    """After an `INSERT` that returned `ids` for `objs` (in order): the objects as `bulk_create` leaves them."""
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        obj._state.adding, obj._state.db = False, connection.alias
