"""Hand-written SQL for the per-message hot path, in the connection's dialect.

The ORM's query builder (Q objects, pypika) costs about 100 µs of event-loop CPU per
statement; the few statements every message runs are written out instead, parameterised.
Write them with ``?`` placeholders; :func:`dialect_sql` numbers them for PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.queryset import QuerySet

_MARK = re.compile(r"\?")


def dialect_sql(conn: BaseDBAsyncClient, sql: str) -> str:
    """``sql`` with its ``?`` placeholders as the connection's dialect wants them."""
    if conn.capabilities.dialect == "sqlite":
        return sql
    numbers = iter(range(1, sql.count("?") + 1))
    return _MARK.sub(lambda _: f"${next(numbers)}", sql)


def table(model: type[Model]) -> str:
    """The model's quoted table name."""
    return f'"{model._meta.db_table}"'


def db_value(model: type[Model], field: str, value: Any) -> Any:
    """``value`` as the ORM would bind it for ``model.field`` (datetimes: made aware)."""
    return model._meta.fields_map[field].to_db_value(value, model)


def python_value(model: type[Model], field: str, value: Any) -> Any:
    """A column read by hand, as the ORM would return it for ``model.field``."""
    return model._meta.fields_map[field].to_python_value(value)


#: Per (model, dialect): the columns an INSERT writes (in order) and its SQL.
_INSERTS: dict[tuple[type[Model], str], tuple[tuple[str, ...], str]] = {}


def _insert_statement(conn: BaseDBAsyncClient, model: type[Model]) -> tuple[tuple[str, ...], str]:
    dialect = conn.capabilities.dialect
    cached = _INSERTS.get((model, dialect))
    if cached is not None:
        return cached
    meta = model._meta
    names = tuple(n for n in meta.fields_db_projection if not meta.fields_map[n].generated)
    for name in names:
        field = meta.fields_map[name]
        if (
            getattr(field, "auto_now", False)
            or getattr(field, "auto_now_add", False)
            or field.has_db_default()
        ):
            raise TypeError(f"{model.__name__}.{name}: needs Model.create (computed default)")
    columns = ", ".join(f'"{meta.fields_db_projection[n]}"' for n in names)
    sql = f"INSERT INTO {table(model)} ({columns}) VALUES ({', '.join('?' for _ in names)})"
    if dialect != "sqlite":
        sql += f' RETURNING "{meta.db_pk_column}"'
    cached = (names, dialect_sql(conn, sql))
    _INSERTS[(model, dialect)] = cached
    return cached


def _params(model: type[Model], names: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    """One row's values in ``names``' order, defaults filled in, bound as the ORM binds."""
    unknown = set(values) - set(names)
    if unknown:
        raise TypeError(f"{model.__name__} has no column(s) {', '.join(sorted(unknown))}")
    fields_map = model._meta.fields_map
    params: list[Any] = []
    for name in names:
        field = fields_map[name]
        if name in values:
            value = values[name]
        else:
            value = field.default() if callable(field.default) else field.default
        params.append(field.to_db_value(value, model))
    return params


async def insert_rows(
    conn: BaseDBAsyncClient, model: type[Model], rows: list[dict[str, Any]]
) -> None:
    """``model.bulk_create`` of ``rows`` (column -> value) in one statement run for every
    row (``executemany``), without building model instances; no ids come back."""
    if not rows:
        return
    names, sql = _insert_statement(conn, model)
    if conn.capabilities.dialect != "sqlite":
        sql = sql.rpartition(" RETURNING ")[0]
    await conn.execute_many(sql, [_params(model, names, row) for row in rows])


async def insert_row(conn: BaseDBAsyncClient, model: type[Model], **values: Any) -> int:
    """``model.create(**values)`` without building a model instance: the same columns and
    field defaults, values bound as the ORM binds them; returns the new row's id."""
    names, sql = _insert_statement(conn, model)
    params = _params(model, names, values)
    if conn.capabilities.dialect == "sqlite":
        return int(await conn.execute_insert(sql, params))
    row = await conn.execute_insert(sql, params)  # PostgreSQL: the RETURNING row
    return int(row[0])


async def lock_or_skip(conn: BaseDBAsyncClient, query: QuerySet[Any]) -> bool:
    """Whether this transaction may go on with the rows ``query`` selects: on PostgreSQL
    they are locked ``FOR UPDATE SKIP LOCKED`` (False: another daemon holds them, or none
    match); SQLite has no row locks (its writers are serialised), so nothing is asked there
    and the caller's conditional UPDATE decides alone."""
    if conn.capabilities.dialect == "sqlite":
        return True
    # only(): tortoise drops FOR UPDATE from values_list()
    return bool(await query.select_for_update(skip_locked=True).using_db(conn).only("id"))
