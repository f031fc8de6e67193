"""The unit of work: one transaction for one ingest batch or one job run.

Hot-path writes (messages, counter deltas, member sightings) go into :attr:`UnitOfWork.activity`
and are written in bulk, as are deferred ledger posts (:func:`storage.points.post_later`).
Anything that reads or writes through :attr:`UnitOfWork.session` sees them, because asking for
the session flushes the buffers first. :attr:`UnitOfWork.writer` is the same session without
that flush, for the few hot-path statements that never depend on buffered rows (inserting a
check-in, for one); the ledger's own functions book its deferred posts themselves.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from storage import points
from storage.activity import ActivityBuffer


class UnitOfWork:
    """A session plus the write-behind buffer; :meth:`commit` writes both atomically."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.activity = ActivityBuffer()

    @property
    def session(self) -> Session:
        """The session, with every buffered write flushed into it."""
        self.flush()
        return self._session

    @property
    def writer(self) -> Session:
        """The session without flushing the buffer (see the module docstring)."""
        return self._session

    def flush(self) -> None:
        if self.activity:
            self.activity.flush(self._session)
        points.settle(self._session)  # deferred ledger posts (see storage.points.post_later)

    def commit(self) -> None:
        self.flush()
        self._session.commit()

    def rollback(self) -> None:
        self.activity = ActivityBuffer()
        self._session.rollback()
