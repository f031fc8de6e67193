"""Prepared statements for the ingest hot path, and plain reads for the radar's big one.

Running a statement through SQLAlchemy costs about 100 µs of Python before the database sees it
(coercions, cache-key generation, per-row parameter processing). For the few statements that run
once per message (or per check-in), that is most of the work. :class:`BulkStatement` (many rows,
one ``executemany``) and :class:`Prepared` (one row, returning rows) compile their statement once
per dialect, turn named parameters into the DBAPI's form with a function generated once, apply
the column types' bind and result processors themselves, and run on the session's own DBAPI
connection (same transaction). The SQL is SQLAlchemy's, so it is the same on every dialect as the
ORM's would be; only the Python around it is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import date
from typing import Any

from sqlalchemy import Date, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]
Row = tuple[Any, ...]

#: Bound parameters per multi-row INSERT: within SQLite's oldest limit (999).
MAX_PARAMS = 999


def _fast_sqlite_date(original: Processor) -> Processor:
    """SQLite stores a DATE as ``YYYY-MM-DD``: ``date.isoformat`` is that, ten times faster."""

    def process(value: Any) -> Any:
        return value.isoformat() if type(value) is date else original(value)

    return process


def _bind_processor(bind: Any, dialect: Dialect) -> Processor | None:
    process: Processor | None = bind.type._cached_bind_processor(dialect)
    if process is not None and dialect.name == "sqlite" and isinstance(bind.type, Date):
        return _fast_sqlite_date(process)
    return process


def _result_processor(type_: Any, dialect: Dialect) -> Processor | None:
    process: Processor | None = type_._cached_result_processor(dialect, None)
    if process is not None and dialect.name == "sqlite" and isinstance(type_, Date):
        return _memo_sqlite_date(process)
    return process


def _memo_sqlite_date(original: Processor) -> Processor:
    """SQLite hands dates back as text, parsed by a regular expression; a cohort has few days."""
    parsed: dict[Any, Any] = {}

    def process(value: Any) -> Any:
        found = parsed.get(value)
        if found is None:
            found = original(value)
            if len(parsed) < 4096:
                parsed[value] = found
        return found

    return process


class _Compiled:
    """A statement compiled for one dialect, with its parameter builder and result processors."""

    def __init__(
        self,
        stmt: ClauseElement,
        dialect: Dialect,
        keys: tuple[str, ...],
        column_keys: list[str],
        many: bool,
    ) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys, for_executemany=many)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self.positional = positional = bool(compiled.positional)
        # An INSERT's "VALUES (...)" part, for multi-row INSERTs.
        values: Any = getattr(compiled, "_insertmanyvalues", None)
        self.values_expr: str | None = None
        if values is not None and f"({values.single_values_expr})" in self.sql:
            self.values_expr = values.single_values_expr
        self._multi: dict[int, str] = {}
        order = list(compiled.positiontup or ()) if positional else list(compiled.binds)
        if self.values_expr is None and positional and dialect.paramstyle == "qmark":
            # SQLAlchemy marks no VALUES part in an upsert compiled for executemany on SQLite:
            # a plain one (every parameter, in order) is as good.
            plain = ", ".join(["?"] * len(order))
            if self.sql.count(f"VALUES ({plain})") == 1:
                self.values_expr = plain
        # Columns left out of an INSERT whose default SQLAlchemy computes before executing.
        defaults: dict[str, Any] = {}
        for column in getattr(compiled, "insert_prefetch", ()):
            default = column.default
            if default is None or not default.is_scalar:
                raise TypeError(f"{column.key}: only scalar column defaults can be prepared")
            defaults[column.key] = default.arg
        namespace: dict[str, Any] = {}
        by_name: list[str] = []  # the parameters, taken from a row of named values
        by_position: list[str] = []  # the same, from a row of values in ``keys`` order
        for i, name in enumerate(order):
            bind = compiled.binds[name]
            process = _bind_processor(bind, dialect)
            if name in keys:
                named, placed = f"row[{name!r}]", f"row[{keys.index(name)}]"
                if process is not None:
                    namespace[f"p{i}"] = process
                    named, placed = f"p{i}({named})", f"p{i}({placed})"
            else:  # a column default or a literal in the statement (a 0, say): processed once
                value = defaults.get(name, bind.value)
                namespace[f"c{i}"] = process(value) if process else value
                named = placed = f"c{i}"
            by_name.append(named if positional else f"{name!r}: {named}")
            by_position.append(placed if positional else f"{name!r}: {placed}")

        def display(parts: list[str]) -> str:
            return f"({', '.join(parts)},)" if positional else f"{{{', '.join(parts)}}}"

        # One generated function per statement and dialect: a tuple (or dict) display is several
        # times faster than looping over the columns for every row.
        exec(
            f"def build(row):\n    return {display(by_name)}\n"
            f"def build_placed(row):\n    return {display(by_position)}\n",
            namespace,
        )
        self.build: Callable[[dict[str, Any]], Any] = namespace["build"]
        #: ``build`` for a row given as a sequence of values in ``keys`` order.
        self.build_placed: Callable[[Sequence[Any]], Any] = namespace["build_placed"]
        self.results: list[Processor | None] = [
            _result_processor(entry[3], dialect)  # (keyname, name, objects, type)
            for entry in compiled._result_columns
        ]

    def multi_sql(self, count: int) -> str:
        """This INSERT with ``count`` rows of (positional) values."""
        sql = self._multi.get(count)
        if sql is None:
            assert self.values_expr is not None and self.positional
            one = f"({self.values_expr})"
            sql = self._multi[count] = self.sql.replace(one, ", ".join([one] * count), 1)
        return sql

    def rows(self, cursor: Any) -> list[Row]:
        fetched = cursor.fetchall()
        results = self.results
        if not any(results):
            return [tuple(r) for r in fetched]
        return [
            tuple(v if p is None else p(v) for v, p in zip(r, results, strict=True))
            for r in fetched
        ]


class _Statement:
    _many = False  # compiled for executemany (and multi-row INSERTs)

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
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            stmt = self._build(session)
            compiled = _Compiled(stmt, dialect, self.keys, self._column_keys, self._many)
            self._compiled[dialect.name] = compiled
        return compiled


class BulkStatement(_Statement):
    """A statement run with many rows of named parameters (``keys``), in one ``executemany``.

    With ``placed``, each row is a sequence of the values in ``keys`` order instead of a mapping:
    a hot path that builds a tuple per row skips building a dict of the same values.
    """

    _many = True

    def __init__(
        self,
        build: Callable[[Session], ClauseElement],
        keys: Sequence[str],
        column_keys: Sequence[str] | None = None,
        *,
        placed: bool = False,
    ) -> None:
        super().__init__(build, keys, column_keys)
        self.placed = placed

    def execute(
        self, session: Session, rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]
    ) -> None:
        """Run the statement once per row: rows of named values, or (:attr:`placed`) of values
        in ``keys`` order."""
        if not rows:
            return
        c = self._compile(session)
        build: Callable[[Any], Any] = c.build_placed if self.placed else c.build
        params = [build(row) for row in rows]
        cursor = session.connection().connection.cursor()
        try:
            cursor.executemany(c.sql, params)
        finally:
            cursor.close()

    def execute_bound(self, session: Session, rows: Sequence[Sequence[Any]]) -> None:
        """Run an INSERT with rows of values already as the DBAPI takes them (positional, in
        ``keys`` order), as multi-row INSERTs of up to :data:`MAX_PARAMS` parameters: SQLite
        then runs one statement per hundred rows instead of a step per row (its ``executemany``
        binds and steps row by row)."""
        if not rows:
            return
        c = self._compile(session)
        if c.values_expr is None or not c.positional:
            raise TypeError("execute_bound() needs an INSERT and a positional DBAPI")
        per = max(1, MAX_PARAMS // max(1, len(self.keys)))
        cursor = session.connection().connection.cursor()
        try:
            full = len(rows) - len(rows) % per
            if full:
                sql = c.multi_sql(per)
                cursor.executemany(
                    sql,
                    [[v for row in rows[i : i + per] for v in row] for i in range(0, full, per)],
                )
            if full < len(rows):
                rest = rows[full:]
                cursor.execute(c.multi_sql(len(rest)), [v for row in rest for v in row])
        finally:
            cursor.close()

    def returning(
        self, session: Session, rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]
    ) -> list[Row]:
        """Run an INSERT ... RETURNING for ``rows``; return every returned row. On SQLite, as
        multi-row INSERTs (its ``executemany`` cannot return rows); with psycopg, as one
        pipelined ``executemany`` that returns them."""
        if not rows:
            return []
        c = self._compile(session)
        build: Callable[[Any], Any] = c.build_placed if self.placed else c.build
        per = max(1, MAX_PARAMS // max(1, len(self.keys)))
        out: list[Row] = []
        cursor: Any = session.connection().connection.cursor()
        try:
            if session.get_bind().dialect.driver == "psycopg":
                # psycopg pipelines an executemany and can return each row's results: one
                # prepared statement instead of long multi-row SQL it would parse every time.
                cursor.executemany(c.sql, [build(row) for row in rows], returning=True)
                while True:
                    out.extend(c.rows(cursor))
                    if not cursor.nextset():
                        return out
            if c.values_expr is None or not c.positional:
                raise TypeError("returning() needs an INSERT and psycopg or a positional DBAPI")
            for start in range(0, len(rows), per):
                chunk = rows[start : start + per]
                params = [v for row in chunk for v in build(row)]
                cursor.execute(c.multi_sql(len(chunk)), params)
                out.extend(c.rows(cursor))
        finally:
            cursor.close()
        return out


#: Where :func:`_cursor` keeps a session's DBAPI cursor and dialect for its current transaction.
_CURSOR = "storage.bulk.cursor"


def _cursor(session: Session) -> tuple[Any, Dialect]:
    """The DBAPI cursor :class:`Prepared` statements share within the session's transaction, and
    the session's dialect: asking SQLAlchemy for the connection costs more than a small statement
    (it is looked up once per transaction; :func:`_forget_cursor` drops it when that ends)."""
    found: tuple[Any, Dialect] | None = session.info.get(_CURSOR)
    if found is None:
        cursor = session.connection().connection.cursor()
        found = session.info[_CURSOR] = (cursor, session.get_bind().dialect)
    return found


@event.listens_for(Session, "after_transaction_end")
def _forget_cursor(session: Session, _transaction: Any) -> None:
    found = session.info.pop(_CURSOR, None)
    if found is not None:
        # The connection may be closed by now (a pool's overflow connection is, on release).
        with suppress(Exception):
            found[0].close()


class Prepared(_Statement):
    """A statement run once with named parameters (``keys``); returns its rows, if any.

    Pending ORM changes are flushed first, as ``session.execute`` would for an ORM statement.
    Rows come back as plain tuples with the columns' result processing applied.
    """

    def all(self, session: Session, **params: Any) -> list[Row]:
        session.flush()
        cursor, dialect = _cursor(session)
        c = self._compiled.get(dialect.name) or self._compile(session)
        cursor.execute(c.sql, c.build(params))
        return c.rows(cursor) if cursor.description else []

    def first(self, session: Session, **params: Any) -> Row | None:
        rows = self.all(session, **params)
        return rows[0] if rows else None

    def scalar(self, session: Session, **params: Any) -> Any:
        row = self.first(session, **params)
        return None if row is None else row[0]

    def run(self, session: Session, **params: Any) -> int:
        """Execute a statement that returns no rows; return how many rows it changed."""
        session.flush()
        cursor, dialect = _cursor(session)
        c = self._compiled.get(dialect.name) or self._compile(session)
        cursor.execute(c.sql, c.build(params))
        return int(cursor.rowcount)


def fetch_all(
    session: Session, stmt: ClauseElement, sqlite_index: tuple[str, str] | None = None
) -> list[Any]:
    """Run a SELECT on the session's connection through the DBAPI cursor and return its plain
    rows, without SQLAlchemy's per-row result processing (about 10 µs a row on a big read).

    Only for statements whose columns need no result processing: text, numbers, booleans the
    caller tests for truth, and values the caller converts itself (SQLite returns dates and
    times as their stored text).

    ``sqlite_index``: ``(table, index)``, on SQLite the index the statement's join to ``table``
    must use (``INDEXED BY``: SQLAlchemy renders no SQLite hints, and without statistics
    SQLite's planner prefers a unique index even when another one covers the query).
    """
    dialect = session.get_bind().dialect
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    sql = str(compiled)
    if sqlite_index is not None and dialect.name == "sqlite":
        table, index = sqlite_index
        hinted = sql.replace(f" JOIN {table} ON ", f" JOIN {table} INDEXED BY {index} ON ", 1)
        if hinted == sql:
            raise ValueError(f"no join to {table} in the statement")
        sql = hinted
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
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()
