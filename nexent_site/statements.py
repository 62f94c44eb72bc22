"""Several writes in one statement, for the hot paths where each alone would be a round trip that waits for a
CPU (and, in a worker, for the GIL) under load: `Statement` joins them as `WITH` parts, and `insert_sql`,
`insert_where_sql` and `update_sql` give the `INSERT`s and `UPDATE`s for them.

The values are prepared as Django's `save()` and `bulk_create()` prepare them (defaults, `auto_now_add`, JSON
adaptation). The SQL is written here, once for each model and shape, not by Django's compilers on every call
(which cost more CPU than the rest of building a turn's end); a value that is an expression (`F()`, `Now()`) still
goes through Django's compiler. A `Statement` is bound on the server
(`connection.prepared_cursor`): its many values are sent apart from the SQL, not quoted into it (a chat turn's end:
0.25 ms less of the worker's CPU, 0.6 ms less wall time, at 10 chats on slow vCPUs), and PostgreSQL keeps its plan
once the same SQL has run five times on a connection."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
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
    returns no id.

    Written here rather than by Django's `InsertQuery` compiler, which cost a chat turn's end 0.6 ms of CPU for
    its two `INSERT`s on a quiet worker (slow vCPUs, 2026-12-06): the SQL is made once for each model, number of
    rows and options, and the values are prepared as Django's compiler prepares them (`pre_save`, then
    `get_db_prep_save`). A value that is an expression (`Now()`) goes through Django's compiler."""
    fields = insert_fields(model)
    rows = [[field.pre_save(obj, add=True) for field in fields] for obj in objs]
    if any(hasattr(value, "resolve_expression") for row in rows for value in row):
        return _django_insert_sql(model, objs, returning=returning, ignore_conflicts=ignore_conflicts)
    params = tuple(
        field.get_db_prep_save(value, connection) for row in rows for field, value in zip(fields, row, strict=True)
    )
    return _insert_template(model, len(objs), returning, ignore_conflicts), params


@functools.cache
def _insert_template(model: type[Model], rows: int, returning: bool, ignore_conflicts: bool) -> str:
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    fields = insert_fields(model)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {table} ({', '.join(q(f.column) for f in fields)}) VALUES {', '.join([row] * rows)}"
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    return sql + _returning(model) if returning else sql


def _django_insert_sql(
    model: type[Model], objs: Sequence[Model], *, returning: bool = False, ignore_conflicts: bool = False
) -> Sql:
    query = InsertQuery(model, on_conflict=OnConflict.IGNORE if ignore_conflicts else None)
    query.insert_values(insert_fields(model), objs)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [model._meta.pk] if returning else None
    [(sql, params)] = compiler.as_sql()
    return sql, tuple(params)


def update_sql(
    obj: Model, fields: Sequence[str], *, where: dict[str, Any] | None = None, returning: bool = False
) -> Sql:
    """The `UPDATE` of `obj`'s row with its values of `fields` (as `obj.save(update_fields=fields)` writes them),
    only if its row also matches the lookups in `where`; returning its id if `returning` (no row: not written).

    Written here rather than by Django's `UpdateQuery` compiler, which cost a chat turn's end 6% of the worker's
    CPU at 50 chats for its two `UPDATE`s (slow vCPUs, 2026-12-06): the SQL is made once for each model, fields
    and lookups, and the values are prepared as Django's compiler prepares them (`get_db_prep_save` for what is
    written, the lookups' `get_prep_value` and `get_db_prep_value` for what is matched). Every value is a
    parameter, None included, and a list is one (`= ANY(%s)`), so the SQL is the same whatever the values: one
    statement for PostgreSQL to prepare. What it does not write itself goes through Django's compiler: a value
    that is an expression (`F()`, `Now()`), and any lookup but equality with a value or membership of a list on a
    column of the model's own (`status="x"`, `status__in=[…]`)."""
    model = type(obj)
    chosen = _plain_fields(model, tuple(fields))
    written = [(field, field.pre_save(obj, False)) for field in chosen or ()]
    matched = [(model._meta.pk, "exact", obj.pk)]
    for lookup, value in (where or {}).items():
        name, _, kind = lookup.partition("__")
        field = model._meta.pk if name == "pk" else model._meta.get_field(name)
        matched.append((field, kind or "exact", value))
    if (
        chosen is None
        or any(hasattr(value, "resolve_expression") for _, value in written)
        or not all(_plain_lookup(field, kind, value) for field, kind, value in matched)
    ):
        return _django_update_sql(obj, fields, where=where, returning=returning)
    sql = _update_template(model, tuple(fields), tuple((field, kind) for field, kind, _ in matched), returning)
    params = [field.get_db_prep_save(value, connection) for field, value in written]
    for field, kind, value in matched:
        if kind == "in":
            params.append([_lookup_value(field, item) for item in value])
        else:
            params.append(_lookup_value(field, value))
    return sql, tuple(params)


@functools.cache
def _plain_fields(model: type[Model], names: tuple[str, ...]) -> list[Field] | None:
    """The fields named `names`, or None if any is one Django's compiler writes its own way (a placeholder of its
    own, not a column)."""
    fields = [model._meta.get_field(name) for name in names]
    return None if any(hasattr(f, "get_placeholder") or not f.concrete for f in fields) else fields


def _plain_lookup(field: Field, kind: str, value: Any) -> bool:
    """Whether `update_sql` writes this lookup itself: equality with a value, or membership of a list of values,
    on a column (Django writes `= None` as `IS NULL`, and reads a model instance for its key)."""

    def plain(item: Any) -> bool:
        return item is not None and not isinstance(item, Model) and not hasattr(item, "resolve_expression")

    if not field.concrete or field.is_relation:
        return False
    if kind == "in":
        return isinstance(value, list | tuple) and all(plain(item) for item in value)
    return kind == "exact" and plain(value)


@functools.cache
def _update_template(
    model: type[Model], names: tuple[str, ...], matched: tuple[tuple[Field, str], ...], returning: bool
) -> str:
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    conditions = [f"{table}.{q(field.column)} {'= ANY(%s)' if kind == 'in' else '= %s'}" for field, kind in matched]
    assignments = ", ".join(f"{q(field.column)} = %s" for field in _plain_fields(model, names) or ())
    sql = f"UPDATE {table} SET {assignments} WHERE {' AND '.join(conditions)}"
    return sql + _returning(model) if returning else sql


def _returning(model: type[Model]) -> str:
    """The clause that returns the id of each row written."""
    q = connection.ops.quote_name
    return f" RETURNING {q(model._meta.db_table)}.{q(model._meta.pk.column)}"


def _lookup_value(field: Field, value: Any) -> Any:
    """`value` as a lookup on `field` sends it (Django's `Exact` and `In`)."""
    return field.get_db_prep_value(field.get_prep_value(value), connection, prepared=True)


def _django_update_sql(
    obj: Model, fields: Sequence[str], *, where: dict[str, Any] | None = None, returning: bool = False
) -> Sql:
    model = type(obj)
    query = UpdateQuery(model)
    chosen = [model._meta.get_field(name) for name in fields]
    query.add_update_fields([(field, None, field.pre_save(obj, False)) for field in chosen])
    query.add_filter("pk", obj.pk)
    for lookup, value in (where or {}).items():
        query.add_filter(lookup, value)
    sql, params = query.get_compiler(connection=connection).as_sql()
    return (sql + _returning(model) if returning else sql), tuple(params)


def marked_saved(objs: Sequence[Model], ids: Sequence[Any]) -> None:
    """After an `INSERT` that returned `ids` for `objs` (in order): the objects as `bulk_create` leaves them."""
    for obj, pk in zip(objs, ids, strict=True):
        obj.pk = pk
        obj._state.adding, obj._state.db = False, connection.alias


def insert_where_sql(model: type[Model], objs: Sequence[Model], *, where: str, returning: bool = False) -> Sql:
    """The `INSERT` of `objs`, written only if `where` holds (SQL, such as `EXISTS (SELECT 1 FROM <an earlier
    part>)`), returning their ids if `returning`. Each value is cast to its column's type (a column of NULLs
    would be text otherwise)."""
    q = connection.ops.quote_name
    fields = insert_fields(model)
    row = "(" + ", ".join(f"%s::{f.cast_db_type(connection)}" for f in fields) + ")"
    params = tuple(f.get_db_prep_save(f.pre_save(obj, add=True), connection) for obj in objs for f in fields)
    sql = (
        f"INSERT INTO {q(model._meta.db_table)} ({', '.join(q(f.column) for f in fields)})"
        f" SELECT * FROM (VALUES {', '.join([row] * len(objs))}) AS v WHERE {where}"
    )
    return (sql + _returning(model) if returning else sql), params


class Statement:
    """Writes joined into one statement: `part`s (`name AS (sql)`, in order: a part may read an earlier one's
    `RETURNING`), run in one round trip and so in one transaction, and values the statement returns from them,
    each given to its function once it has run."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._params: list[Any] = []
        self._returns: list[tuple[str, Callable[[Any], None]]] = []

    def part(self, name: str, sql: Sql) -> None:
        self._parts.append(f"{name} AS ({sql[0]})")
        self._params.extend(sql[1])

    def returns(self, expression: str, then: Callable[[Any], None]) -> None:
        """Return `expression` (SQL that reads the parts, without parameters); `then` gets its value."""
        self._returns.append((expression, then))

    def execute(self) -> None:
        selected = ", ".join(expression for expression, _ in self._returns) or "1"
        # bound on the server (no quoting of its many values), prepared once its SQL has come up a few times
        with connection.prepared_cursor(at_once=False) as cursor:
            cursor.execute(f"WITH {', '.join(self._parts)} SELECT {selected}", self._params)
            row = cursor.fetchone()
        for (_, then), value in zip(self._returns, row, strict=False):
            then(value)
