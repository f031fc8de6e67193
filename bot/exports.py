"""CSV exports (SPEC §4 ``cohortbot export points``, §14 backups)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy.orm import Session

from storage import points as ledger
from storage import roster

BALANCE_COLUMNS = ("member_id", "name", "balance", "earned", "spent", "entries", "last_entry_at")
ENTRY_COLUMNS = (
    "id",
    "member_id",
    "name",
    "day",
    "delta",
    "reason",
    "note",
    "actor",
    "key",
    "created_at",
)


def write_points_csv(session: Session, cohort_id: str, out: TextIO, entries: bool = False) -> int:
    """Write one row per member (balance, points earned, points spent, number of entries, last
    entry time), or with ``entries`` one row per ledger entry; return the rows written."""
    rows = ledger.entries_of_cohort(session, cohort_id)
    names = roster.names(session, {e.member_id for e in rows})
    writer = csv.writer(out)
    if entries:
        writer.writerow(ENTRY_COLUMNS)
        for e in rows:
            writer.writerow(
                (
                    e.id,
                    e.member_id,
                    names[e.member_id],
                    e.day.isoformat(),
                    e.delta,
                    e.reason,
                    e.note,
                    e.actor,
                    e.key,
                    e.created_at.isoformat(),
                )
            )
        return len(rows)
    summary: dict[str, _Row] = {}
    for e in rows:
        row = summary.setdefault(e.member_id, _Row())
        row.balance += e.delta
        if e.reason in ledger.SPENDING_REASONS:
            row.spent -= e.delta
        else:
            row.earned += e.delta
        row.entries += 1
        row.last = e.created_at.isoformat()
    writer.writerow(BALANCE_COLUMNS)
    for member, r in sorted(summary.items(), key=lambda kv: (-kv[1].balance, kv[0])):
        writer.writerow((member, names[member], r.balance, r.earned, r.spent, r.entries, r.last))
    return len(summary)


@dataclass
class _Row:
    balance: int = 0
    earned: int = 0
    spent: int = 0  # redemptions net of refunds
    entries: int = 0
    last: str = ""
