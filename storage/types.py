"""Column types shared by the tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

_SQLITE_FORMAT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; SQLite hands back naive values, this makes them aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite: one step instead of two (this type's conversion, then SQLAlchemy's DATETIME
        # formatting), in SQLAlchemy's storage format: YYYY-MM-DD HH:MM:SS.ffffff. The last
        # value is remembered: bulk rows often repeat one (a batch's "now", a first = last time).
        last: list[tuple[datetime | None, str]] = [(None, "")]

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            seen, text = last[0]
            if value is seen:
                return text
            moment = value
            if moment.tzinfo is not UTC:
                if moment.tzinfo is None:
                    raise ValueError("naive datetime given to a UTCDateTime column")
                moment = moment.astimezone(UTC)
            text = _SQLITE_FORMAT % (
                moment.year,
                moment.month,
                moment.day,
                moment.hour,
                moment.minute,
                moment.second,
                moment.microsecond,
            )
            last[0] = (value, text)  # one tuple: a reader in another thread sees a whole pair
            return text

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
