"""Course-progress import (SPEC §7 signal 8): ``cohortbot import-progress FILE.csv``.

Columns: learner id, completion rate, homework rate. Rates are "85%", or plain numbers on one
scale per column: a column with any plain number above 1 is read as 0-100 (so "1" there is 1%,
not 100%), otherwise as 0-1. An optional header row is skipped. A learner id that is in no
group's roster is reported, not imported (a typo would otherwise be stored silently). Bad rows
are reported with their line numbers; the rest are imported. The file may be UTF-8 (with or
without a BOM) or GBK/GB18030, as Excel on Chinese Windows saves CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import radar
from storage.dialect import one_of
from storage.roster import Member

#: Encodings tried in order: UTF-8 (a BOM is dropped), then what Excel writes on Chinese Windows.
ENCODINGS = ("utf-8-sig", "gb18030")


def read_lines(path: str | Path) -> list[str]:
    """The file's lines, decoded with the first of :data:`ENCODINGS` that fits. Raises
    ``OSError`` for an unreadable file and ``UnicodeDecodeError`` when no encoding fits."""
    data = Path(path).read_bytes()
    for encoding in ENCODINGS[:-1]:
        try:
            return data.decode(encoding).splitlines()
        except UnicodeDecodeError:
            continue
    return data.decode(ENCODINGS[-1]).splitlines()


def _number(text: str) -> tuple[float, bool]:
    """``(value, is_percent)``; raises ValueError for what is not a number."""
    text = text.strip()
    percent = text.endswith("%")
    return float(text.rstrip("%").strip()), percent


def parse_rows(
    lines: Iterable[str],
) -> tuple[list[tuple[str, float, float]], list[tuple[int, str]]]:
    """Good rows and ``(line number, reason)`` for bad ones."""
    numbered, errors = _parse(lines)
    return [(member, c, h) for _, member, c, h in numbered], errors


def _parse(
    lines: Iterable[str],
) -> tuple[list[tuple[int, str, float, float]], list[tuple[int, str]]]:
    """:func:`parse_rows` with each good row's line number first."""
    rows: list[tuple[int, str, list[tuple[float, bool]]]] = []
    errors: list[tuple[int, str]] = []
    for number, row in enumerate(csv.reader(lines), 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3:
            errors.append(
                (number, f"需要 3 列（学员ID, 完课率, 作业提交率），这一行有 {len(row)} 列")
            )
            continue
        member, completion, homework = (c.strip() for c in row)
        try:
            rows.append((number, member, [_number(completion), _number(homework)]))
        except ValueError:
            if number == 1:
                continue  # a header row
            errors.append((number, f"比例不是 0-1、0-100 或百分数：{completion!r}, {homework!r}"))
    # One scale per column: any plain number above 1 makes the column percentages.
    hundred = [any(not rates[i][1] and rates[i][0] > 1 for _, _, rates in rows) for i in (0, 1)]
    good: list[tuple[int, str, float, float]] = []
    for number, member, rates in rows:
        values = [v / 100 if percent or hundred[i] else v for i, (v, percent) in enumerate(rates)]
        if not member:
            errors.append((number, "学员ID为空"))
        elif not all(0 <= v <= 1 for v in values):
            shown = ", ".join(f"{v:g}{'%' if p else ''}" for v, p in rates)
            errors.append((number, f"比例超出范围（0-1 或 0-100）：{shown}"))
        else:
            good.append((number, member, values[0], values[1]))
    return good, sorted(errors)


def import_progress(
    session: Session, lines: Iterable[str], now: datetime
) -> tuple[int, list[tuple[int, str]]]:
    """Import the good rows of known learners; return how many and the bad rows' line numbers
    and reasons."""
    good, errors = _parse(lines)
    ids = list({member for _, member, _, _ in good})
    stmt = select(col(Member.id)).where(one_of(session, col(Member.id), ids))
    known = set(session.scalars(stmt)) if ids else set()
    errors += [
        (number, f"不认识这个学员ID：{member}（不在任何群的名单里）")
        for number, member, _, _ in good
        if member not in known
    ]
    rows = [(member, c, h) for _, member, c, h in good if member in known]
    radar.save_progress(session, rows, now)
    return len(rows), sorted(errors)
