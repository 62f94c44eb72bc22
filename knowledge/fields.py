"""The chunk embedding column: pgvector's `vector` where the extension is installed, `real[]` where it is not.

A PostgreSQL without pgvector (the machine's own 15 here, many managed databases until enabled) must still
migrate and serve keyword search, and must keep the embeddings it computed so vector search can start once
the column is converted. pgvector-python's `VectorField` has no such fallback, so this small field decides
the column type from the database it migrates, and always speaks lists of floats to Python.
"""

from __future__ import annotations

from typing import Any

from django.db import models

_vector_columns: dict[str, bool] = {}


def pgvector_installed(connection: Any) -> bool:
    """Whether the `vector` extension is installed in this database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        return cursor.fetchone() is not None


def pgvector_available(connection: Any) -> str | None:
    """The pgvector version this PostgreSQL could install, or None."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        row = cursor.fetchone()
    return row[0] if row else None


def vector_search_enabled(connection: Any) -> bool:
    """Whether the current schema's chunk embeddings are a pgvector column (cached per schema: a column's
    type only changes by a migration)."""
    schema = connection.schema_name
    if schema not in _vector_columns:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT udt_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'knowledge_chunk' AND column_name = 'embedding'",
                [schema],
            )
            row = cursor.fetchone()
        if row is None:
            return False  # not migrated yet: don't remember
        _vector_columns[schema] = row[0] == "vector"
    return _vector_columns[schema]


def vector_literal(values: list[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


class EmbeddingField(models.Field):
    description = "An embedding vector (pgvector `vector`, or `real[]` without the extension)"

    def db_type(self, connection: Any) -> str:
        return "vector" if pgvector_installed(connection) else "real[]"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if value is None:
            return None
        # pgvector parses its text form; a real[] column takes a list through psycopg's array dumper.
        return vector_literal(value) if vector_search_enabled(connection) else [float(v) for v in value]

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> list[float] | None:
        if value is None or isinstance(value, list):
            return value
        return [float(v) for v in value.strip("[]").split(",") if v]
