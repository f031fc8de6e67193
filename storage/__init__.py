"""Persistence: SQLModel tables and the narrow repository functions that read and write them.

One module per topic owns its tables and queries (roster, inbox, messages, activity, checkins).
:mod:`storage.db` owns engines and migrations; :mod:`storage.uow` owns the unit of work that one
ingest batch or job writes through.
"""
