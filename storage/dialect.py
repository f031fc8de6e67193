"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, String, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlmodel import SQLModel


def insert_for(session: Session, model: type[SQLModel]) -> Any:
    """A dialect-specific INSERT (it has ``on_conflict_do_*``) for ``model``'s table."""
    table = model.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def upsert_rows(
    session: Session,
    model: type[SQLModel],
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    update: Sequence[str] = (),
) -> None:
    """INSERT ``rows`` (one executemany); on a key conflict do nothing, or overwrite the
    ``update`` columns with the new values."""
    if not rows:
        return
    ins = insert_for(session, model)
    if update:
        stmt = ins.on_conflict_do_update(
            index_elements=list(keys), set_={c: ins.excluded[c] for c in update}
        )
    else:
        stmt = ins.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(stmt, list(rows))


#: From this many values on, SQLite reads an id list as one JSON parameter (see :func:`one_of`).
JSON_LIST_FROM = 64


def one_of(session: Session, column: Any, values: Sequence[Any]) -> Any:
    """``column IN (values)``, one parameter however long the list: on PostgreSQL
    ``column = ANY(:array)``, on SQLite ``column IN (SELECT value FROM json_each(:json))`` for a
    long list of ids (strings or integers). Expanding and parsing an IN list of a thousand
    groups, or of 60,000 members, costs more than the query it filters; SQLite plans both forms
    alike (an index lookup per value)."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    if len(values) >= JSON_LIST_FROM and all(type(v) in (str, int) for v in values):
        listed = func.json_each(bindparam(None, json.dumps(values), type_=String())).table_valued(
            "value"
        )
        return column.in_(select(listed.c.value))
    return column.in_(values)
