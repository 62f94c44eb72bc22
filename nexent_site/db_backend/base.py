"""django-tenants' PostgreSQL backend, with the search_path remembered per physical connection, and prepared
cursors for hot statements (`DatabaseWrapper.prepared_cursor`).

django-tenants sets the connection's `search_path` again after every `set_tenant`, even to the schema the
connection is already on. Every chat turn enters its tenant twice (the web's send, the worker's task) and each
time paid a `SET search_path` round trip before its first query, on the path to the first token. Here the
search_path a physical connection has is written on that connection when it is set, and a cursor of the same
schema on that same connection skips the `SET`.

What the remembered value must follow, or a query could run in another tenant's schema:
- PostgreSQL undoes a `SET` when the transaction or savepoint that issued it rolls back: a rollback and a
  savepoint rollback forget it (before they run, so a failed rollback forgets it too);
- a connection given back to psycopg's pool inside a transaction is rolled back by the pool, outside Django:
  closing forgets it unless the connection is idle;
- a `SET` that fails forgets it.
tenants/tests/test_search_path.py checks each of these.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, ServerBindingCursor
from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorWrapper
from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantDatabaseWrapper
from django_tenants.utils import get_limit_set_calls
from psycopg.errors import DataError
from psycopg.pq import Format, TransactionStatus

APPLIED = "_nexent_search_path"  # the attribute on the psycopg connection: the search_path it has


class PreparingCursor(ServerBindingCursor):
    """psycopg's cursor with server-side binding (what Django's `server_side_binding` option uses for every
    query). Its statements are prepared on the connection the first time they run (`prepare` True), or once they
    have run `prepare_threshold` times (None); psycopg keeps the last 100. Nothing is prepared when the
    connection's `prepare_threshold` is None (`DATABASE_PREPARED_STATEMENTS=false`)."""

    prepare: bool | None = True

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(query, params, prepare=self.prepare if prepare is None else prepare, binary=binary)


class DatabaseOperations(PostgresOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str | None:
        if isinstance(cursor, PreparingCursor):  # bound on the server: shown as Django shows such queries
            try:
                return self.compose_sql(sql, params)
            except DataError:
                return None
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(TenantDatabaseWrapper):
    ops_class = DatabaseOperations

    def prepared_cursor(self, *, at_once: bool = True) -> CursorWrapper:
        """A cursor for a statement that runs often on a hot path, with many parameters: PostgreSQL parses and
        plans it once per connection (and again when its search_path changes: each tenant's tables are its own),
        and its parameters are sent apart from the SQL instead of quoted into it. For the chat send's statement
        this took 1 ms from each send (slow vCPUs). Django's cursors bind on the client and prepare nothing (its
        `server_side_binding` option would bind every query of the platform on the server). `at_once`: prepared
        by its first run; else once it ran `prepare_threshold` (5) times on the connection, for statements whose
        SQL varies (as many rows as there are objects to write).

        Opened as Django opens its cursors (`_cursor`): the connection checked and opened, the cursor wrapped for
        Django's query logging and execute wrappers, the tenant's search_path set. A statement's first run on a
        connection takes one more round trip (psycopg prepares it first), as does its next run after a rollback:
        psycopg deallocates a connection's prepared statements when it rolls back, or runs a `ROLLBACK TO
        SAVEPOINT`, a `DROP` or an `ALTER` once it has some (the same object may be made anew)."""
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = PreparingCursor(self.connection)
            cursor.prepare = True if at_once else None
            # as Django's create_cursor: the cursor's time zone only when the connection's differs
            if self.timezone != self.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT).timezone:
                register_tzloader(self.timezone, cursor)
            wrapped = self._prepare_cursor(cursor)
        self._handle_search_path(wrapped)
        return wrapped

    def _handle_search_path(self, cursor: Any = None) -> None:
        if self._setting_search_path or self.connection is None:
            super()._handle_search_path(cursor)
            return
        if get_limit_set_calls():
            if self.search_path_set_schemas:  # set since the last switch: django-tenants issues nothing
                return
            wanted = self._get_cursor_search_paths()
            if getattr(self.connection, APPLIED, None) == wanted:
                self.search_path_set_schemas = wanted  # this connection has it already
                return
        super()._handle_search_path(cursor)  # issues the SET
        setattr(self.connection, APPLIED, self.search_path_set_schemas)  # None when the SET failed

    def _forget_search_path(self) -> None:
        if self.connection is not None:
            setattr(self.connection, APPLIED, None)

    def rollback(self) -> None:
        # before (a failed rollback leaves it unknown) and after (the ROLLBACK's own cursor may have set it)
        self._forget_search_path()
        try:
            super().rollback()
        finally:
            self._forget_search_path()

    def savepoint_rollback(self, sid: str) -> None:
        self._forget_search_path()
        try:
            super().savepoint_rollback(sid)
        finally:
            self._forget_search_path()

    def close(self) -> None:
        if self.connection is not None:
            try:
                idle = self.connection.info.transaction_status == TransactionStatus.IDLE
            except Exception:
                idle = False
            if not idle:  # the pool rolls it back, or it is broken: either way, not known any more
                self._forget_search_path()
        super().close()
