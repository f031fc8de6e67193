# ruff: noqa: E501
"""The nightly pass of ``bench/digest_scale.py`` alone, for iterating on it: the synthetic data is
loaded ONCE into a kept SQLite file or PostgreSQL schema (``load``), then ``time`` runs
``group_digests(..., persist=True)`` and rolls it back, again and again, printing CPU and wall
time per pass (optionally under cProfile, and with the ``--check`` hashes of digest_scale.py).

    .venv/bin/python bench/digest_pass.py load --db sqlite:////tmp/digest_pass.db
    .venv/bin/python bench/digest_pass.py time --db sqlite:////tmp/digest_pass.db [-n 5] [--profile out.prof] [--check]
    .venv/bin/python bench/digest_pass.py load --db postgresql://postgres@127.0.0.1:5432/test --schema digest_pass
    .venv/bin/python bench/digest_pass.py drop --db postgresql://... --schema digest_pass
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from digest_scale import (  # type: ignore[import-not-found]
    DAYS,
    TODAY,
    config,
    fingerprint,
    load_pg,
    load_sqlite,
    radar_fingerprint,
    synth,
)
from sqlalchemy import create_engine, text

from bot.config import parse_settings
from bot.radar import evaluate
from handlers.digest import group_digests, split_markdown
from storage import rollup
from storage.db import Database
from storage.roster import sync_config


def url_of(args: argparse.Namespace) -> str:
    if not args.schema:
        return str(args.db)
    sep = "&" if "?" in args.db else "?"
    return f"{args.db}{sep}options=-csearch_path%3D{args.schema}"


def admin(args: argparse.Namespace) -> object:
    return create_engine(args.db.replace("postgresql://", "postgresql+psycopg://", 1))


def cmd_load(args: argparse.Namespace) -> None:
    if args.schema:
        eng = admin(args)
        with eng.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{args.schema}"'))
    url = url_of(args)
    settings = parse_settings(config(url, args.groups), env={})
    db = Database(url)
    db.upgrade()
    with db.unit_of_work_sync() as uow:
        sync_config(uow.session, settings)
    t0 = time.perf_counter()
    data = synth(args.groups, args.members)
    (load_sqlite if db.dialect == "sqlite" else load_pg)(db, data)
    cohort = settings.cohort("bench")
    with db.unit_of_work_sync() as uow:
        rollup.ensure(uow.session, [g.chat_id for g in cohort.groups], TODAY, cohort.start_date)
    db.dispose()
    print(f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def cmd_drop(args: argparse.Namespace) -> None:
    eng = admin(args)
    with eng.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))


def cmd_time(args: argparse.Namespace) -> None:
    url = url_of(args)
    settings = parse_settings(config(url, args.groups), env={})
    cohort = settings.cohort("bench")
    chat_ids = [g.chat_id for g in cohort.groups]
    db = Database(url)
    gc.collect()
    gc.freeze()
    cpu_all, wall_all = [], []
    for i in range(args.n):
        with db.unit_of_work_sync() as uow:
            prof = cProfile.Profile() if args.profile and i == args.n - 1 else None
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            digests = group_digests(uow.session, settings, cohort, chat_ids, TODAY, persist=True)
            parts = sum(len(split_markdown(t)) for t in digests.values())
            if prof:
                prof.disable()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            cpu_all.append(cpu)
            wall_all.append(wall)
            print(f"pass {i}: cpu {cpu:.3f} s  wall {wall:.3f} s  parts {parts}", flush=True)
            if prof:
                prof.dump_stats(args.profile)
            if args.check and i == 0:
                uow.flush()
                rows = uow.session.execute(
                    text("SELECT * FROM risk_flag ORDER BY chat_id, member_id")
                ).all()
                print("digest_hash", fingerprint(digests[c] for c in sorted(digests)))
                print("flags_hash ", fingerprint(tuple(r) for r in rows))
                if args.next_day:
                    nxt = TODAY + timedelta(days=1)
                    rollup.ensure(uow.session, chat_ids, nxt, cohort.start_date)
                    again = group_digests(
                        uow.session, settings, cohort, chat_ids, nxt, persist=True
                    )
                    print("next_day_hash", fingerprint(again[c] for c in sorted(again)))
                    radar2 = evaluate(uow.session, settings, cohort, chat_ids, nxt, persist=False)
                    print("next_radar_hash", radar_fingerprint(radar2))
            uow.rollback()
        if args.check and i == 0:
            with db.unit_of_work_sync() as uow:
                radar = evaluate(uow.session, settings, cohort, chat_ids, TODAY, persist=False)
                print("radar_hash ", radar_fingerprint(radar))
                uow.rollback()
    cpu_all.sort()
    wall_all.sort()
    print(
        f"cpu min {cpu_all[0]:.3f} median {cpu_all[len(cpu_all) // 2]:.3f}; wall min {wall_all[0]:.3f} median {wall_all[len(wall_all) // 2]:.3f}"
    )
    db.dispose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["load", "time", "drop"])
    ap.add_argument("--db", required=True)
    ap.add_argument("--schema", default="")
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--profile", default="")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--next-day", action="store_true")
    args = ap.parse_args()
    assert DAYS == 28
    {"load": cmd_load, "time": cmd_time, "drop": cmd_drop}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
