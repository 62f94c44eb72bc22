"""django-tenants' PostgreSQL backend, with the search_path remembered per physical connection.

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

from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantDatabaseWrapper
from django_tenants.utils import get_limit_set_calls
from psycopg.pq import TransactionStatus

APPLIED = "_nexent_search_path"  # the attribute on the psycopg connection: the search_path it has


class DatabaseWrapper(TenantDatabaseWrapper):
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
