"""Course-progress import (SPEC §7 signal 8): ``cohortbot import-progress FILE.csv``.

Columns: learner id, completion rate, homework rate; rates as 0..1, 0..100 or "85%". An optional
header row is skipped. Bad rows are reported with their line numbers; the rest are imported.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from storage import radar


def _rate(text: str) -> float:
    text = text.strip()
    percent = text.endswith("%")
    value = float(text.rstrip("%"))
    if percent or value > 1:
        value /= 100
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


def parse_rows(
    lines: Iterable[str],
) -> tuple[list[tuple[str, float, float]], list[tuple[int, str]]]:
    """Good rows and ``(line number, reason)`` for bad ones."""
    good: list[tuple[str, float, float]] = []
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
            good.append((member, _rate(completion), _rate(homework)))
        except ValueError:
            if number == 1:
                continue  # a header row
            errors.append((number, f"比例不是 0-1、0-100 或百分数：{completion!r}, {homework!r}"))
            continue
        if not member:
            good.pop()
            errors.append((number, "学员ID为空"))
    return good, errors


def import_progress(
    session: Session, lines: Iterable[str], now: datetime
) -> tuple[int, list[tuple[int, str]]]:
    """Import the good rows; return how many and the bad rows' line numbers and reasons."""
    good, errors = parse_rows(lines)
    radar.save_progress(session, good, now)
    return len(good), errors
