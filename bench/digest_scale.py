# ruff: noqa: E501
"""Digest at scale (SPEC §17): 1,000 groups x 200 members x 28 days of synthetic activity, then
the time to compute every group's risk levels and digest, on SQLite and PostgreSQL, side by side.

    .venv/bin/python bench/digest_scale.py [--pg-url URL] [--groups 1000] [--members 200]

PostgreSQL: ``--pg-url`` or ``COHORTBOT_TEST_POSTGRES_URL``; a fresh schema is created and
dropped. Rows are inserted in bulk directly (executemany / COPY), not through the pipeline.
The radar rollup is built first, as the ``radar.rollup`` job does at the start of each learning
day (timed on its own line); the timed passes are the nightly ones. The flagged learners per
level and the digests' quiet lists are checked, so a fast wrong answer fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text

from bot.config import parse_settings
from bot.radar import evaluate
from handlers.digest import group_digests, split_markdown
from storage import rollup
from storage.db import Database
from storage.roster import sync_config

DAYS = 28
START = date(2026, 11, 2)
TODAY = START + timedelta(days=DAYS - 1)


def config(url: str, groups: int) -> dict[str, Any]:
    return {
        "database": {"url": url},
        "cohorts": [
            {
                "id": "bench",
                "course": "规模测试营",
                "start_date": START.isoformat(),
                "length_days": DAYS,
                "groups": [
                    {"chat_id": f"wr{g:05d}", "name": f"{g}班", "teachers": [f"t{g % 50}"]}
                    for g in range(groups)
                ],
            }
        ],
    }


def synth(
    groups: int, members: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Members, memberships and counter rows (personas: steady, fading, silent, irregular)."""
    rnd = random.Random(7)
    joined = datetime(2026, 11, 1, 12, tzinfo=UTC)
    mem, ships, counters = [], [], []
    for g in range(groups):
        chat = f"wr{g:05d}"
        for m in range(members):
            mid = f"wm{g:05d}{m:04d}"
            mem.append((mid, f"学员{g}-{m}", "external", f"t{g % 50}", joined))
            persona = rnd.random()
            last = None
            for d in range(DAYS):
                if persona < 0.6:
                    p = 0.9
                elif persona < 0.8:
                    p = 0.9 if d < 10 else 0.15
                elif persona < 0.9:
                    p = 0.0
                else:
                    p = 0.5
                if rnd.random() < p:
                    day = START + timedelta(days=d)
                    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
                    msgs = rnd.randint(1, 8)
                    counters.append(
                        (
                            chat,
                            mid,
                            day,
                            msgs,
                            msgs * rnd.randint(5, 40),
                            1 if rnd.random() < 0.85 else 0,
                            0,
                            rnd.randint(0, 1),
                            0,
                            0,
                            at,
                            at,
                        )
                    )
                    last = at
            ships.append((chat, mid, joined, last, last, 1 if persona < 0.8 else 0))
    return mem, ships, counters


COUNTER_COLS = "chat_id, member_id, day, messages, chars, checkins, homework, reviews_given, reviews_received, commands, first_at, last_at"


def load_sqlite(db: Database, data: tuple[list[Any], list[Any], list[Any]]) -> None:
    mem, ships, counters = data
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        iso = lambda v: v.replace(tzinfo=None).isoformat(sep=" ") if isinstance(v, datetime) else v  # noqa: E731
        cur.executemany(
            "INSERT INTO member (id, name, kind, owner_userid, created_at) VALUES (?,?,?,?,?)",
            [tuple(iso(x) for x in r) for r in mem],
        )
        cur.executemany(
            "INSERT INTO membership (chat_id, member_id, joined_at, first_message_at, last_seen_at, days_active, intro_done_at) "
            "VALUES (?,?,?,?,?,0,CASE WHEN ? THEN '2026-11-02 01:00:00' END)",
            [tuple(iso(x) for x in r) for r in ships],
        )
        cur.executemany(
            f"INSERT INTO daily_counter ({COUNTER_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                tuple(
                    iso(x) if not isinstance(x, date) or isinstance(x, datetime) else x.isoformat()
                    for x in r
                )
                for r in counters
            ],
        )
        raw.commit()
    finally:
        raw.close()


def load_pg(db: Database, data: tuple[list[Any], list[Any], list[Any]]) -> None:
    mem, ships, counters = data
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy("COPY member (id, name, kind, owner_userid, created_at) FROM STDIN") as cp:  # type: ignore[attr-defined]
            for r in mem:
                cp.write_row(r)
        intro = datetime(2026, 11, 2, 1, tzinfo=UTC)
        with cur.copy(
            "COPY membership (chat_id, member_id, joined_at, first_message_at, last_seen_at, days_active, intro_done_at) FROM STDIN"
        ) as cp:  # type: ignore[attr-defined]
            for c, m, j, f, ls, i in ships:
                cp.write_row((c, m, j, f, ls, 0, intro if i else None))
        # Day by day, as the pipeline writes them: a day's rows share the table's recent pages.
        with cur.copy(f"COPY daily_counter ({COUNTER_COLS}) FROM STDIN") as cp:  # type: ignore[attr-defined]
            for r in sorted(counters, key=lambda r: r[2]):
                cp.write_row(r)
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def fingerprint(parts: Any) -> str:
    """A short hash of a sequence of reprs (for checking that output did not change)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def radar_fingerprint(radar: dict[str, Any]) -> str:
    """Every learner's full radar result, in group then member order."""
    return fingerprint(
        dataclasses.astuple(m)
        for c in sorted(radar)
        for m in sorted(radar[c].members, key=lambda m: m.member_id)
    ) + "/" + fingerprint(
        (g.chat_id, g.total, g.active_today, g.messages_today, g.checkins_today,
         g.checkin_avg7, g.reviewers_today, [m.member_id for m in g.flagged])
        for c, g in sorted(radar.items())
    )  # fmt: skip


def run(name: str, url: str, data: Any, groups: int, check: bool = False) -> dict[str, Any]:
    settings = parse_settings(config(url, groups), env={})
    db = Database(url)
    db.upgrade()
    with db.unit_of_work_sync() as uow:
        sync_config(uow.session, settings)
    t0 = time.perf_counter()
    (load_sqlite if db.dialect == "sqlite" else load_pg)(db, data)
    load_s = time.perf_counter() - t0
    cohort = settings.cohort("bench")
    chat_ids = [g.chat_id for g in cohort.groups]
    out: dict[str, Any] = {"load_s": load_s}
    # The 3.8 M synthetic rows stay alive for the next database: keep the garbage collector from
    # walking them on every full collection (a real process holds nothing like them).
    gc.collect()
    gc.freeze()
    # Once per learning day, at its start (the radar.rollup job): not part of the nightly pass.
    with db.unit_of_work_sync() as uow:
        t0 = time.perf_counter()
        rollup.ensure(uow.session, chat_ids, TODAY, cohort.start_date)
    out["rollup_s"] = time.perf_counter() - t0
    with db.unit_of_work_sync() as uow:
        t0 = time.perf_counter()
        radar = evaluate(uow.session, settings, cohort, chat_ids, TODAY, persist=False)
        out["radar_s"] = time.perf_counter() - t0
        flagged = [m for g in radar.values() for m in g.flagged]
        out["flagged"] = len(flagged)
        if check:
            out["radar_hash"] = radar_fingerprint(radar)
        for level in (1, 2, 3):
            out[f"level{level}"] = sum(1 for m in flagged if m.level == level)
        uow.rollback()
    # A fast wrong answer must not pass: the synthetic personas flag learners at every level.
    assert all(out[f"level{level}"] > 1000 for level in (1, 2, 3)), out
    with db.unit_of_work_sync() as uow:
        t0 = time.perf_counter()
        digests = group_digests(uow.session, settings, cohort, chat_ids, TODAY, persist=True)
        parts = sum(len(split_markdown(t)) for t in digests.values())
        out["digest_s"] = time.perf_counter() - t0
        out["parts"] = parts
        listed = sum(t.count("\n   > 信号：") for t in digests.values())
        assert listed == sum(min(len(g.flagged), 60) for g in radar.values()), listed
        if check:
            out["digest_hash"] = fingerprint(digests[c] for c in sorted(digests))
            uow.flush()
            rows = uow.session.execute(
                text("SELECT * FROM risk_flag ORDER BY chat_id, member_id")
            ).all()
            out["flags_hash"] = fingerprint(tuple(r) for r in rows)
    if check:
        # A second day's pass over the persisted flags (hysteresis, "holding" learners).
        with db.unit_of_work_sync() as uow:
            nxt = TODAY + timedelta(days=1)
            rollup.ensure(uow.session, chat_ids, nxt, cohort.start_date)
            again = group_digests(uow.session, settings, cohort, chat_ids, nxt, persist=True)
            out["next_day_hash"] = fingerprint(again[c] for c in sorted(again))
            radar2 = evaluate(uow.session, settings, cohort, chat_ids, nxt, persist=False)
            out["next_radar_hash"] = radar_fingerprint(radar2)
    db.dispose()
    print(f"  {name}: done", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-url", default=os.environ.get("COHORTBOT_TEST_POSTGRES_URL"))
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument(
        "--check",
        action="store_true",
        help="also print hashes of every risk result, digest and stored flag (output unchanged?)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = synth(args.groups, args.members)
    print(
        f"synthetic: {len(data[0])} members, {len(data[2])} counter rows "
        f"({time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = run(
            "sqlite", f"sqlite:///{tmp}/bench.db", data, args.groups, args.check
        )
    if args.pg_url:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in args.pg_url else "?"
        try:
            results["postgresql"] = run(
                "postgresql",
                f"{args.pg_url}{sep}options=-csearch_path%3D{schema}",
                data,
                args.groups,
                args.check,
            )
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    names = list(results)
    print(f"digest_scale: {args.groups} groups x {args.members} members x {DAYS} days")
    print(f"{'':28}" + "".join(f"{n:>14}" for n in names))
    for key, label in (
        ("load_s", "bulk load (s)"),
        ("rollup_s", "rollup, once a day (s)"),
        ("radar_s", "risk levels, all groups (s)"),
        ("digest_s", "digests + risk, all groups (s)"),
        ("flagged", "flagged learners"),
        ("level1", "  light"),
        ("level2", "  medium"),
        ("level3", "  high"),
        ("parts", "markdown messages"),
    ):
        print(
            f"{label:28}"
            + "".join(
                f"{results[n][key]:>14.2f}" if key.endswith("_s") else f"{int(results[n][key]):>14}"
                for n in names
            )
        )
    if args.check:
        for key in ("radar_hash", "digest_hash", "flags_hash", "next_day_hash", "next_radar_hash"):
            print(f"{key:28}" + "".join(f"  {results[n][key]}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
