"""Bulk statements for the ingest hot path, and plain reads for the radar's big one.

SQLAlchemy's executemany processes every row's parameters in Python (about 10 µs a row). For the
few statements that run once per message, :class:`BulkStatement` compiles the statement once per
dialect, applies the column types' bind processors itself, and hands the rows to the DBAPI's
``executemany`` on the session's own connection (same transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: tuple[str, ...]  # parameter names in statement order
    processors: dict[str, Processor]
    positional: bool  # the DBAPI wants tuples (qmark/format), not dicts
    constants: dict[str, Any]  # binds that are not row keys (a literal 0, say), processed


class BulkStatement:
    """A statement run with many rows of named parameters (``keys``)."""

    def __init__(
        self,
        build: Callable[[Session], ClauseElement],
        keys: Sequence[str],
        column_keys: Sequence[str] | None = None,
    ) -> None:
        self._build = build
        self.keys = tuple(keys)
        # The columns an INSERT takes from the rows; an UPDATE with explicit binds takes none.
        self._column_keys = list(self.keys if column_keys is None else column_keys)
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, session: Session) -> _Compiled:
        dialect = session.get_bind().dialect
        cached = self._compiled.get(dialect.name)
        if cached is not None:
            return cached
        compiled = self._build(session).compile(dialect=dialect, column_keys=self._column_keys)
        assert isinstance(compiled, SQLCompiler)
        processors: dict[str, Processor] = {
            name: bind.type._cached_bind_processor(dialect) for name, bind in compiled.binds.items()
        }
        constants: dict[str, Any] = {}
        for name, bind in compiled.binds.items():
            if name not in self.keys:
                process = processors[name]
                constants[name] = process(bind.value) if process else bind.value
        positional = bool(compiled.positional)
        order = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
        cached = _Compiled(str(compiled), order, processors, positional, constants)
        self._compiled[dialect.name] = cached
        return cached

    def execute(self, session: Session, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        c = self._compile(session)
        sql, order, processors, positional, constants = (
            c.sql,
            c.order,
            c.processors,
            c.positional,
            c.constants,
        )
        plan = [(name, processors.get(name)) for name in order if name not in constants]
        params: list[Any]
        if positional:
            slots = [(n, p, n in constants) for n, p in ((n, processors.get(n)) for n in order)]
            params = [
                tuple(
                    constants[n] if const else (p(row[n]) if p else row[n]) for n, p, const in slots
                )
                for row in rows
            ]
        else:
            params = [
                {**constants, **{n: (p(row[n]) if p else row[n]) for n, p in plan}} for row in rows
            ]
        cursor = session.connection().connection.cursor()
        try:
            cursor.executemany(sql, params)
        finally:
            cursor.close()


def fetch_all(session: Session, stmt: ClauseElement) -> list[Any]:
    """Run a SELECT on the session's connection through the DBAPI cursor and return its plain
    rows, without SQLAlchemy's per-row result processing (about 10 µs a row on a big read).

    Only for statements whose columns need no result processing: text, numbers, booleans the
    caller tests for truth, and values the caller converts itself (SQLite returns dates and
    times as their stored text).
    """
    dialect = session.get_bind().dialect
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    # An expanded IN list's values are named ``<bind>_<n>``; their processor is the bind's.
    procs: dict[str, Any] = dict(compiled._bind_processors)
    values: dict[str, Any] = {}
    for name, value in compiled.params.items():
        process = procs.get(name) or procs.get(name.rsplit("_", 1)[0])
        values[name] = process(value) if process else value
    params: Any
    if compiled.positional:
        params = tuple(values[name] for name in compiled.positiontup or ())
    else:
        params = values
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()
