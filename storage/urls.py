"""Database URLs: which ones cohortbot runs on, and the form SQLAlchemy is given. A leaf module
(SQLAlchemy only), so that config validation can use it without importing the storage layer."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

#: The two databases cohortbot runs on, as an operator would write their URLs.
SUPPORTED_URLS = "sqlite:///FILE or postgresql://USER@HOST:PORT/DBNAME"
#: URL schemes of PostgreSQL: SQLAlchemy's name and the common spelling (libpq, Heroku, psql).
POSTGRES_BACKENDS = ("postgresql", "postgres")


def url_problem(url: str) -> str | None:
    """What is wrong with a database URL before anything connects, or None. The URL itself is
    never repeated: it may hold a password."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return f"not a database URL (expected {SUPPORTED_URLS})"
    backend = parsed.get_backend_name()
    if backend in POSTGRES_BACKENDS:
        return None  # any driver named: psycopg 3 is used (normalize_url)
    if backend == "sqlite" and parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return None
    return f"unsupported database {parsed.drivername!r} (expected {SUPPORTED_URLS})"


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names (or none), and whether it is
    spelled ``postgresql://`` or ``postgres://``."""
    parsed = make_url(url)
    if parsed.get_backend_name() in POSTGRES_BACKENDS and parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)
