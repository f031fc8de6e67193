"""The radar rollup never disagrees with the daily counters: after imports, backfills of days it
already covers, recalls, a rolled-back ("crashed") unit of work and its replay, and a new day,
the learners read through the rollup equal the ones aggregated straight from the counters.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bot.app import App
from bot.radar import evaluate
from storage import bulk, rollup
from storage import radar as store
from storage.radar import Learner
from tests.builders import archive_recall, archive_text, local, pair
from tests.conftest import GROUP_A, GROUP_B

START = date(2026, 11, 2)
CHATS = [GROUP_A, GROUP_B]
TEXT = "今天学了列表推导式和字典的用法，感觉比昨天顺手多了"


def at(day: date, hour: int = 12, minute: int = 0):  # type: ignore[no-untyped-def]
    return local(day.year, day.month, day.day, hour, minute)


async def post(app: App, chat: str, member: str, day: date, text: str = TEXT, **kw: object) -> str:
    item = archive_text(chat, member, text, at(day, **kw), name=member)  # type: ignore[arg-type]
    await app.pipeline.ingest([pair(item)])
    return str(item["msgid"])


def direct(app: App, today: date) -> list[Learner]:
    """The reference: members plus one aggregate over the counters, no rollup involved."""
    with app.db.unit_of_work_sync() as uow:
        s = uow.session
        zeros = (0, 0, 0, 0, 0, 0, 0)
        aggs = {(a.chat_id, a.member_id): a[2:] for a in store.aggregates(s, CHATS, today, START)}
        return sorted(
            Learner(*m, *aggs.get((m.chat_id, m.member_id), zeros)) for m in store.members(s, CHATS)
        )


def through_rollup(app: App, today: date) -> list[Learner]:
    with app.db.unit_of_work_sync() as uow:
        s = uow.session
        assert rollup.ensure(s, CHATS, today, START) == CHATS
        assert s.scalar(select(func.count()).select_from(rollup.RadarDirty)) == 0
        rows = sorted(store.learners(s, CHATS, today, START))
    return rows


def agree(app: App, today: date) -> list[Learner]:
    expected = direct(app, today)
    assert through_rollup(app, today) == expected
    return expected


def dirty_in(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(rollup.RadarDirty)) or 0)


def dirty(app: App) -> int:
    with app.db.unit_of_work_sync() as uow:
        return dirty_in(uow.session)


async def test_rollup_matches_the_counters_through_backfills_recalls_and_replays(
    app: App,
) -> None:
    app.clock.set(local(2026, 11, 20, 21))  # type: ignore[attr-defined]
    today = date(2026, 11, 20)
    # Ten days of ordinary activity: three learners in two groups.
    msgs: dict[tuple[str, date], str] = {}
    for n in range(10):
        day = START + timedelta(days=n)
        msgs[("wmA", day)] = await post(app, GROUP_A, "wmA", day, f"#打卡 第{n + 1}天 {TEXT}")
        if n % 3:
            await post(app, GROUP_A, "wmB", day)
        if n < 4:
            await post(app, GROUP_B, "wmC", day, f"打卡 {TEXT}")
    before = agree(app, today)
    assert any(r.message_mask for r in before) and any(r.checkin_mask for r in before)

    # A backfill import of days the rollup already covers marks those learners dirty ...
    await post(app, GROUP_A, "wmB", START + timedelta(days=12), f"#打卡 第13天 {TEXT}")
    await post(app, GROUP_B, "wmD", START + timedelta(days=15))
    assert dirty(app) == 2
    # ... and the next pass repairs exactly them.
    after = agree(app, today)
    assert after != before
    assert dirty(app) == 0

    # Today's messages are read from the counters directly: nothing to repair.
    await post(app, GROUP_A, "wmC", today)
    assert dirty(app) == 0
    agree(app, today)

    # A recall of a message on a covered day (the check-in moves, counts drop).
    day9 = START + timedelta(days=9)
    await app.pipeline.ingest(
        [pair(archive_recall(GROUP_A, "wmA", msgs[("wmA", day9)], at(day9, 12, 1)))]
    )
    assert dirty(app) == 1
    agree(app, today)

    # A unit of work that dies after writing counters leaves no trace, in counters or marks;
    # its replay is counted once, and the rollup follows.
    def dies() -> None:
        with app.db.unit_of_work_sync() as uow:
            uow.activity.count((GROUP_A, "wmB", START + timedelta(days=3)), messages=5, chars=99)
            uow.flush()
            assert dirty_in(uow.session) == 1
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        dies()
    assert dirty(app) == 0
    agree(app, today)
    replay = archive_text(GROUP_A, "wmB", TEXT, at(START + timedelta(days=3), 18), name="wmB")
    await app.pipeline.ingest([pair(replay)])
    await app.pipeline.ingest([pair(replay)])  # the same message again: dropped by the inbox
    assert dirty(app) == 1
    agree(app, today)

    # The next learning day rebuilds from the counters; an old day (before the rollup) is
    # aggregated directly without touching the rollup.
    agree(app, today + timedelta(days=1))
    with app.db.unit_of_work_sync() as uow:
        past = sorted(store.learners(uow.session, CHATS, today - timedelta(days=2), START))
        assert rollup.states(uow.session, CHATS)[GROUP_A].sealed_before == today + timedelta(days=1)
    assert past == direct(app, today - timedelta(days=2))


async def test_radar_is_the_same_with_or_without_the_rollup(app: App) -> None:
    app.clock.set(local(2026, 11, 12, 21))  # type: ignore[attr-defined]
    for n in range(10):
        day = START + timedelta(days=n)
        for i, member in enumerate(("wmA", "wmB", "wmC", "wmD")):
            if n < 3 + 2 * i:
                await post(
                    app, GROUP_A, member, day, f"#打卡 第{n + 1}天 {TEXT}" if i % 2 else TEXT
                )
    cohort = app.settings.cohort("c1")
    today = date(2026, 11, 11)

    def levels() -> list[tuple[str, int, list[str], int, int]]:
        with app.db.unit_of_work_sync() as uow:
            radar = evaluate(uow.session, app.settings, cohort, [GROUP_A], today, persist=False)
            uow.rollback()
        return sorted(
            (m.member_id, m.level, [f.why for f in m.fired], m.days_quiet, m.streak)
            for m in radar[GROUP_A].members
        )

    with_rollup = levels()
    assert any(level for _, level, _, _, _ in with_rollup)
    # Seal the rollup for a later day: the same day is then computed from the counters alone.
    with app.db.unit_of_work_sync() as uow:
        rollup.ensure(uow.session, [GROUP_A], today + timedelta(days=1), START)
    assert levels() == with_rollup


def test_flag_states_upsert_twice_in_one_transaction(app: App) -> None:
    """save_flags inserts and then updates (PostgreSQL: through a session-local staging table,
    emptied between two saves in the same transaction and at commit)."""
    day = date(2026, 11, 12)

    def state(member: str, flagged: bool, level: int, signals: str) -> dict[str, object]:
        return {
            "chat_id": GROUP_A, "member_id": member, "day": day, "flagged": flagged,
            "prev_flagged": False, "level": level, "signals": signals,
            "since": day if flagged else None,
        }  # fmt: skip

    with app.db.unit_of_work_sync() as uow:
        store.save_flags(uow.session, [state("wmA", True, 2, "silence,no_intro")])
        store.save_flags(
            uow.session, [state("wmA", False, 0, ""), state("wmB", True, 1, "volume_drop")]
        )
    with app.db.unit_of_work_sync() as uow:
        store.save_flags(uow.session, [state("wmC", True, 3, 'a"b,c\\d')])
    with app.db.unit_of_work_sync() as uow:
        flags = store.flags_of(uow.session, CHATS)
    assert flags == {
        (GROUP_A, "wmA"): store.FlagState(day, False, False, 0, "", None),
        (GROUP_A, "wmB"): store.FlagState(day, True, False, 1, "volume_drop", day),
        (GROUP_A, "wmC"): store.FlagState(day, True, False, 3, 'a"b,c\\d', day),
    }


def test_many_flag_states_save_in_chunks_as_the_orm_stores_them(app: App) -> None:
    """A save of more states than one multi-row statement holds (SQLite: 124 a statement) stores
    every one, updates the ones already there, and stores dates and booleans exactly as the
    ORM does."""
    day = date(2026, 11, 12)
    rows = [_flag(f"wm{i:04d}", i % 4) for i in range(300)]
    with app.db.unit_of_work_sync() as uow:
        store.save_flags(uow.session, rows[:130])
        store.save_flags(uow.session, [{**r, "level": 3, "signals": "a,b"} for r in rows[:5]])
        store.save_flags(uow.session, rows[130:])
        uow.session.add(
            store.RiskFlag(
                chat_id=GROUP_B, member_id="orm", day=day, flagged=True, prev_flagged=False,
                level=1, signals="silence", since=day,
            )
        )  # fmt: skip
    with app.db.unit_of_work_sync() as uow:
        flags = store.flags_of(uow.session, CHATS)
        raw = uow.session.execute(
            text(
                "SELECT day, flagged, prev_flagged, since FROM risk_flag"
                " WHERE member_id IN ('wm0001', 'orm') ORDER BY member_id"
            )
        ).all()
    assert len(flags) == 301
    assert flags[(GROUP_A, "wm0006")] == store.FlagState(day, True, False, 2, "silence", day)
    assert flags[(GROUP_A, "wm0004")] == store.FlagState(day, False, False, 3, "a,b", None)
    assert flags[(GROUP_A, "wm0299")] == store.FlagState(day, True, False, 3, "silence", day)
    assert flags[(GROUP_A, "wm0296")] == store.FlagState(day, False, False, 0, "", None)
    assert tuple(raw[0]) == tuple(raw[1])  # the same stored form as the ORM's row


def _flag(member: str, level: int, day: date = date(2026, 11, 12)) -> dict[str, object]:
    return {
        "chat_id": GROUP_A, "member_id": member, "day": day, "flagged": level > 0,
        "prev_flagged": False, "level": level, "signals": "silence" if level else "",
        "since": day if level else None,
    }  # fmt: skip


def _save_while(app: App, rows: list[dict[str, object]], body: Callable[[], None]) -> None:
    """Save ``rows`` with saving_flags around ``body``, in a unit of work of its own."""
    with app.db.unit_of_work_sync() as uow, store.saving_flags(uow.session, rows):
        body()


def test_flags_saved_while_rendering_belong_to_the_transaction(app: App) -> None:
    """saving_flags (the digest renders meanwhile) writes in the caller's transaction: the
    states are there when the block ends, and gone if the unit of work rolls back."""
    with app.db.unit_of_work_sync() as uow:
        with store.saving_flags(uow.session, [_flag("wmA", 2), _flag("wmB", 0)]):
            rendered = "rendered"
        assert rendered == "rendered"
        saved = store.flags_of(uow.session, CHATS)
        assert sorted(k[1] for k in saved) == ["wmA", "wmB"]
        assert saved[(GROUP_A, "wmA")].level == 2
        uow.rollback()
    with app.db.unit_of_work_sync() as uow:
        assert store.flags_of(uow.session, CHATS) == {}
        with store.saving_flags(uow.session, [_flag("wmC", 1)]):
            pass
    with app.db.unit_of_work_sync() as uow:
        assert list(store.flags_of(uow.session, CHATS)) == [(GROUP_A, "wmC")]


def test_a_failed_flag_save_is_raised_not_lost(app: App) -> None:
    """A state the database refuses (no level) fails the block that saves it, after or before
    its body, never silently."""
    bad = {**_flag("wmA", 1), "level": None}
    with pytest.raises(Exception, match="level"):
        _save_while(app, [_flag("wmB", 1), bad], lambda: None)
    with app.db.unit_of_work_sync() as uow:
        assert store.flags_of(uow.session, CHATS) == {}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_failed_upsert_while_rendering_is_raised_after_the_body(app: App) -> None:
    """On PostgreSQL the upsert runs while the body does; if the server refuses it (here, one
    learner twice in one statement) the block raises once the body is done."""
    ran: list[bool] = []
    with pytest.raises(Exception, match="cannot affect row a second time"):
        _save_while(app, [_flag("wmA", 1), _flag("wmA", 2)], lambda: ran.append(True))
    assert ran == [True]
    with app.db.unit_of_work_sync() as uow:
        assert store.flags_of(uow.session, CHATS) == {}


def test_the_body_error_comes_first_and_the_save_still_ends(app: App) -> None:
    """An error in the body is the one raised; the save has finished by then (the connection
    is free for the rollback)."""

    def render() -> None:
        raise KeyError("render")

    with pytest.raises(KeyError):
        _save_while(app, [_flag("wmA", 1)], render)
    with app.db.unit_of_work_sync() as uow:
        assert store.flags_of(uow.session, CHATS) == {}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_reads_todays_counters_from_the_covering_index(app: App) -> None:
    """On SQLite the learners' join looks today's counter row up in one covering index
    (migration 0720) instead of the primary key's index plus the table."""
    today = START + timedelta(days=2)
    await post(app, GROUP_A, "wmA", today)
    statements: list[str] = []
    with app.db.unit_of_work_sync() as uow:
        raw = uow.session.connection().connection.dbapi_connection
        raw.set_trace_callback(statements.append)  # type: ignore[union-attr]
        try:
            learners = store.learners(uow.session, CHATS, today, START)
        finally:
            raw.set_trace_callback(None)  # type: ignore[union-attr]
        assert [(r.member_id, r.messages_today) for r in learners] == [("wmA", 1)]
        (sql,) = [s for s in statements if "INDEXED BY" in s]
        plan = " ".join(row[-1] for row in uow.session.connection().exec_driver_sql(
            f"EXPLAIN QUERY PLAN {sql}"
        ))  # fmt: skip
    assert f"COVERING INDEX {rollup.TODAY_INDEX}" in plan
    with app.db.unit_of_work_sync() as uow, pytest.raises(ValueError, match="no join to message"):
        bulk.fetch_all(uow.session, select(rollup.RadarRollup), ("message", "ix"))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_has_an_index_for_todays_counters(app: App) -> None:
    """On PostgreSQL migration 0730 indexes daily_counter by day first, with the counts the
    radar reads, so today's rows are found without scanning every day's."""
    with app.db.unit_of_work_sync() as uow:
        (definition,) = uow.session.execute(
            text(
                "SELECT indexdef FROM pg_indexes"
                " WHERE indexname = :name AND schemaname = current_schema()"
            ),
            {"name": rollup.PG_TODAY_INDEX},
        ).one()
    assert definition.endswith(
        "(day, chat_id, member_id) INCLUDE (messages, chars, checkins, reviews_given)"
    ), definition


async def test_reviewers_of_the_day_most_reviews_first_then_by_name(app: App) -> None:
    """The digest's top reviewers: the five learners with the most reviews today, equal counts
    by name."""
    app.clock.set(local(2026, 11, 12, 21))  # type: ignore[attr-defined]
    today = date(2026, 11, 12)
    given = {"wmA": 1, "wmB": 3, "wmC": 3, "wmD": 2, "wmE": 1, "wmF": 1, "wmG": 0}
    for member in given:
        await post(app, GROUP_A, member, today)
    with app.db.unit_of_work_sync() as uow:
        for member, n in given.items():
            uow.session.execute(
                text(
                    "UPDATE daily_counter SET reviews_given = :n"
                    " WHERE chat_id = :c AND member_id = :m AND day = :d"
                ),
                {"n": n, "c": GROUP_A, "m": member, "d": today},
            )
    cohort = app.settings.cohort("c1")
    with app.db.unit_of_work_sync() as uow:
        radar = evaluate(uow.session, app.settings, cohort, [GROUP_A], today, persist=False)
    assert radar[GROUP_A].reviewers_today == [
        ("wmB", "wmB", 3), ("wmC", "wmC", 3), ("wmD", "wmD", 2), ("wmA", "wmA", 1),
        ("wmE", "wmE", 1),
    ]  # fmt: skip
