"""The points ledger: check-in points, duplicates, recalls, caps, 积分, 加分/扣分, and concurrent
redemptions that must not overspend (both backends, real threads with their own connections)."""

from __future__ import annotations

import asyncio
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.clock import ManualClock
from bot.outbound import RecordingSender
from bot.updates import Door, Update, UpdateKind
from handlers.points import award
from storage import points as ledger
from storage.db import Database
from tests.builders import archive_recall, archive_text, local, pair
from tests.chat import balance, bot, entries, make_settings, open_bot, say, sent
from tests.conftest import GROUP_A

__all__ = ["bot"]


async def test_checkin_pays_once_even_when_delivered_twice(bot: App) -> None:
    at = local(2026, 11, 3, 9)
    await say(bot, "wmKid", "#打卡 第2天 学了列表", at, msgid="dup")
    await say(bot, "wmKid", "#打卡 第2天 学了列表", at, msgid="dup")
    await say(bot, "wmKid", "#打卡 又来一次", at + timedelta(hours=1))
    assert entries(bot, "wmKid") == [("checkin", 2)]
    assert balance(bot, "wmKid") == 2


async def test_recalled_checkin_gives_its_points_back(bot: App) -> None:
    at = local(2026, 11, 3, 9)
    item = archive_text(GROUP_A, "wmKid", "#打卡 今天学了字典", at, msgid="ck1")
    await bot.pipeline.ingest([pair(item)])
    assert balance(bot, "wmKid") == 2
    bot.clock.set(at + timedelta(minutes=1))  # type: ignore[attr-defined]
    recall = archive_recall(GROUP_A, "wmKid", "ck1", at + timedelta(minutes=1))
    await bot.pipeline.ingest([pair(recall)])
    await bot.pipeline.ingest([pair(recall)])  # a redelivered recall reverses once
    assert entries(bot, "wmKid") == [("checkin", 2), ("checkin_undo", -2)]
    assert balance(bot, "wmKid") == 0
    # Checking in again the same day pays again: the day's net is back to +2, never more.
    again = archive_text(GROUP_A, "wmKid", "#打卡 重新打卡", at + timedelta(minutes=5))
    await bot.pipeline.ingest([pair(again)])
    assert balance(bot, "wmKid") == 2


async def test_award_respects_the_daily_cap_and_its_key(bot: App) -> None:
    cohort = bot.settings.cohort("c1")
    async with bot.db.unit_of_work() as uow:
        ctx = bot.pipeline.context(uow)
        day = local(2026, 11, 3).date()
        results = [
            award(ctx, cohort=cohort, member_id="wmAmy", reason=ledger.QUIZ, key=f"q{i}", day=day)
            for i in range(12)
        ]
        again = award(ctx, cohort=cohort, member_id="wmAmy", reason=ledger.QUIZ, key="q0", day=day)
    # quiz +3, cap 30 a day: ten answers pay, the rest are refused.
    assert [r.delta for r in results] == [3] * 10 + [0, 0]
    assert results[-1].reason == "cap"
    assert (again.new, again.reason) == (False, "duplicate")
    assert balance(bot, "wmAmy") == 30


async def test_points_command_shows_balance_entries_and_streak_rules(bot: App) -> None:
    for d in (3, 4, 5):
        await say(bot, "wmKid", f"#打卡 第{d}天", local(2026, 11, d, 9))
    (out,) = await say(bot, "wmKid", "/积分", local(2026, 11, 6, 10))
    assert out.startswith("你的积分：6")
    assert "11-05 打卡 +2" in out
    assert "连续打卡 3 天" in out
    assert "计入连续的日子：11-03、11-04、11-05" in out
    assert "今天（11-06）还没打卡，到次日 04:00 前打卡可保持连续" in out
    assert "补卡：已用 0/2 张（未使用）" in out


async def test_points_command_works_in_single_chat(bot: App) -> None:
    await say(bot, "wmKid", "#打卡", local(2026, 11, 3, 9))
    (out,) = await say(bot, "wmKid", "积分", local(2026, 11, 3, 10), chat="")
    assert out.startswith("你的积分：2")


async def test_leader_adds_and_deducts_points_with_the_actor_logged(bot: App) -> None:
    at = local(2026, 11, 3, 9)
    (added,) = await say(bot, "leader1", "/加分 @小明 5 分享了笔记", at)
    assert added == "已为 小明 加 5 分（分享了笔记），当前 5 分。"
    (taken,) = await say(bot, "leader1", "/扣分 @小明 3 刷屏", at)
    assert taken == "已为 小明 扣 3 分（刷屏），当前 2 分。"
    (refused,) = await say(bot, "leader1", "/扣分 @小明 3 再扣", at)
    assert refused == "小明 只有 2 积分，扣不了 3 分。"
    with bot.db.session() as s:
        rows = [(e.actor, e.delta, e.note) for e in ledger.entries_of_cohort(s, "c1")]
    assert rows == [("leader1", 5, "分享了笔记"), ("leader1", -3, "刷屏")]
    assert balance(bot, "wmKid") == 2


async def test_learner_cannot_add_points_and_nothing_changes(bot: App) -> None:
    (out,) = await say(bot, "wmAmy", "/加分 @Amy 100 我最棒", local(2026, 11, 3, 9))
    assert out == "抱歉，「加分」仅限班长使用。"
    (out,) = await say(bot, "wmAmy", "/扣分 @小明 1 哈", local(2026, 11, 3, 9))
    assert out == "抱歉，「扣分」仅限班长使用。"
    assert balance(bot, "wmAmy") == 0
    assert entries(bot, "wmAmy") == []


async def test_manual_points_need_a_mention_a_number_and_a_reason(bot: App) -> None:
    (out,) = await say(bot, "leader1", "/加分 小明 五 分", local(2026, 11, 3, 9))
    assert out == "请 @ 一位同学。用法：加分 @某人 <分数> <原因>"
    (out,) = await say(bot, "leader1", "/加分 @小明 5", local(2026, 11, 3, 9))
    assert out == "请写分数和原因。用法：加分 @某人 <分数> <原因>"


def _redeem_in_thread(
    url: str,
    clock: ManualClock,
    i: int,
    out: list[str],
    barrier: threading.Barrier,
) -> None:
    """One 兑换 through the whole pipeline, on its own app, engine and connection (so nothing
    but the database serialises the threads)."""
    app = App(
        settings=make_settings(url),
        db=Database(url),
        clock=clock,
        sender=RecordingSender(),
    )
    try:
        update = Update(
            door=Door.AIBOT,
            kind=UpdateKind.MESSAGE,
            message_id=f"redeem{i}",
            chat_id=GROUP_A,
            sender_id="wmKid",
            sent_at=clock.now(),
            text="/兑换 A01",
        )
        barrier.wait(timeout=60)
        asyncio.run(app.pipeline.ingest([(update, "{}")]))
        out.extend(m.text for m in sent(app))
    finally:
        app.close()


async def test_concurrent_redemptions_never_overspend(
    database_url: str, clock: ManualClock
) -> None:
    attempts = 50
    clock.set(local(2026, 11, 3, 10))
    setup = open_bot(make_settings(database_url), clock)
    async with setup.db.unit_of_work() as uow:  # 35 points: A01 costs 10, so 3 fit
        ctx = setup.pipeline.context(uow)
        award(
            ctx,
            cohort=setup.settings.cohort("c1"),
            member_id="wmKid",
            reason=ledger.MANUAL,
            key="seed",
            points=35,
            day=clock.now().date(),
        )
    setup.close()
    replies: list[str] = []
    barrier = threading.Barrier(attempts)
    threads = [
        threading.Thread(
            target=_redeem_in_thread,
            args=(database_url, clock, i, replies, barrier),
        )
        for i in range(attempts)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    check = open_bot(make_settings(database_url), clock)
    try:
        ok = [r for r in replies if r.startswith("✅ 兑换成功")]
        refused = [r for r in replies if r.startswith("积分不够哦")]
        assert (len(ok), len(refused)) == (3, attempts - 3)
        assert balance(check, "wmKid") == 5
        with check.db.session() as s:
            assert ledger.taken(s, "A01") == 3
            assert len(ledger.pending(s, "c1")) == 3
    finally:
        check.close()


def test_concurrent_redemptions_at_the_storage_level(database_url: str, clock: ManualClock) -> None:
    """The same race without the pipeline (whose counter upserts already serialise one member's
    messages): bare sessions on their own connections call :func:`handlers.shop.redeem`."""
    from handlers.shop import redeem

    clock.set(local(2026, 11, 3, 10))
    settings = make_settings(database_url)
    setup = open_bot(settings, clock)
    setup.close()
    cohort = settings.cohort("c1")
    item = settings.catalog_item("A01")
    assert item is not None
    db = Database(database_url)
    day = clock.now().date()
    with db.unit_of_work_sync() as uow:
        ledger.post(
            uow.session,
            cohort_id="c1",
            member_id="wmKid",
            delta=35,
            reason=ledger.MANUAL,
            key="seed",
            day=day,
            now=clock.now(),
        )
    attempts = 50
    barrier = threading.Barrier(attempts)
    results: list[bool] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            with db.unit_of_work_sync() as uow:
                outcome = redeem(
                    uow.session,
                    cohort=cohort,
                    member_id="wmKid",
                    chat_id=GROUP_A,
                    item=item,
                    key=f"k{i}",
                    day=day,
                    now=clock.now(),
                )
                results.append(outcome.ok)
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        assert (results.count(True), results.count(False)) == (3, attempts - 3)
        with db.session() as s:
            assert ledger.balance(s, "c1", "wmKid") == 5 == ledger.ledger_sum(s, "c1", "wmKid")
            assert ledger.taken(s, "A01") == 3
    finally:
        db.dispose()


async def test_help_lists_the_points_commands_by_role(bot: App) -> None:
    (learner,) = await say(bot, "wmKid", "/帮助", local(2026, 11, 3, 9))
    for usage in (
        "积分",
        "商城",
        "兑换 <商品编号>",
        "我的",
        "点评 @某人",
        "排行 [周/总/连续/点评]",
        "补卡 [日期]",
    ):
        assert usage in learner
    for leader_only in ("加分", "扣分", "统计", "开营", "结营", "发放", "取消"):
        assert leader_only not in learner
    (leader,) = await say(bot, "leader1", "/帮助", local(2026, 11, 3, 9))
    for usage in (
        "加分 @某人",
        "扣分 @某人",
        "统计 [天数]",
        "开营 YYYY-MM-DD",
        "结营",
        "发放 <兑换号>",
        "取消 <兑换号>",
    ):
        assert usage in leader


def _ledger_calls(day: date) -> list[dict[str, Any]]:
    """Posts that take every path of ``post``: capped, cut down to the cap, refused by the cap,
    duplicates (within the calls and of an entry booked before), refused debits, other days."""
    other = day + timedelta(days=1)
    calls: list[dict[str, Any]] = []
    for i in range(3):  # a cap of 4: +3, then +1, then refused
        calls.append({"member_id": "wmA", "delta": 3, "reason": ledger.CHECKIN, "key": f"a{i}"})
    calls += [
        {"member_id": "wmA", "delta": 3, "reason": ledger.CHECKIN, "key": "a9", "day": other},
        {"member_id": "wmA", "delta": 3, "reason": ledger.CHECKIN, "key": "a9"},  # duplicate
        {"member_id": "wmA", "delta": 3, "reason": ledger.CHECKIN, "key": "seed"},  # booked
        {"member_id": "wmB", "delta": -5, "reason": ledger.MANUAL, "key": "b0"},  # insufficient
        {"member_id": "wmB", "delta": 4, "reason": ledger.MANUAL, "key": "b1"},
        {"member_id": "wmB", "delta": -4, "reason": ledger.MANUAL, "key": "b2"},
        {"member_id": "wmA", "delta": -2, "reason": ledger.CHECKIN_UNDO, "key": "a-undo"},
        {"member_id": "wmA", "delta": 3, "reason": ledger.CHECKIN, "key": "a3"},  # cap left: 2
        {"member_id": "wmC", "delta": 0, "reason": ledger.MANUAL, "key": "c0"},
    ]
    for call in calls:
        call.setdefault("day", day)
        call["daily_cap"] = 4 if call["reason"] in (ledger.CHECKIN, ledger.CHECKIN_UNDO) else 0
    return calls


def _ledger_rows(db: Database) -> tuple[list[Any], dict[str, int]]:
    with db.session() as s:
        booked = ledger.entries_of_cohort(s, "c1")
        first = booked[0].id or 0  # ids relative to the first (PostgreSQL's sequence goes on)
        rows = [((e.id or 0) - first, e.member_id, e.delta, e.reason, e.key, e.day) for e in booked]
        sums = {m: ledger.ledger_sum(s, "c1", m) for m in ("wmA", "wmB", "wmC")}
        assert sums == {m: ledger.balance(s, "c1", m) for m in sums}
        return rows, ledger.balances(s, "c1")


@pytest.mark.parametrize("direct_between", [False, True])
def test_deferred_posts_book_what_post_would(
    database_url: str, clock: ManualClock, tmp_path: Path, direct_between: bool
) -> None:
    """``post_later`` then one settle: the same entries (ids in call order), balances and
    refusals as ``post`` one call at a time; a direct post in between keeps the order."""
    clock.set(local(2026, 11, 3, 10))
    day = clock.now().date()
    outcomes = []
    for deferred in (False, True):
        url = database_url
        if deferred and database_url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / 'deferred.db'}"
        if deferred and not database_url.startswith("sqlite"):
            # A second run in the same PostgreSQL schema: start from an empty ledger again.
            cleared = Database(url)
            with cleared.unit_of_work_sync() as uow:
                for model in (ledger.PointsEntry, ledger.PointsBalance):
                    uow.session.execute(model.__table__.delete())  # type: ignore[attr-defined]
            cleared.dispose()
        open_bot(make_settings(url), clock).close()
        db = Database(url)
        try:
            with db.unit_of_work_sync() as uow:
                ledger.post(
                    uow.session,
                    cohort_id="c1",
                    member_id="wmA",
                    delta=1,
                    reason=ledger.MANUAL,
                    key="seed",
                    day=day,
                    now=clock.now(),
                )
            with db.unit_of_work_sync() as uow:
                for i, call in enumerate(_ledger_calls(day)):
                    post = ledger.post_later if deferred else ledger.post
                    post(uow.writer, cohort_id="c1", now=clock.now(), **call)
                    if direct_between and i == 4:
                        ledger.post(
                            uow.writer,
                            cohort_id="c1",
                            member_id="wmB",
                            delta=2,
                            reason=ledger.MANUAL,
                            key="direct",
                            day=day,
                            now=clock.now(),
                        )
            outcomes.append(_ledger_rows(db))
        finally:
            db.dispose()
    assert outcomes[0] == outcomes[1]
    rows, balances = outcomes[1]
    assert [r[4] for r in rows][:4] == ["seed", "a0", "a1", "a9"]
    assert balances["wmA"] == 1 + 3 + 1 + 3 - 2 + 2


def test_deferred_posts_are_read_back_and_rolled_back(
    database_url: str, clock: ManualClock
) -> None:
    """Every ledger read (and a read through the unit of work's session) sees a deferred post;
    a rollback drops the posts that were still waiting."""
    clock.set(local(2026, 11, 3, 10))
    day = clock.now().date()
    open_bot(make_settings(database_url), clock).close()
    db = Database(database_url)
    args: dict[str, Any] = {"cohort_id": "c1", "member_id": "wmA", "reason": ledger.MANUAL}
    try:
        with db.unit_of_work_sync() as uow:
            ledger.post_later(uow.writer, delta=5, key="k1", day=day, now=clock.now(), **args)
            assert ledger.balance(uow.writer, "c1", "wmA") == 5
            ledger.post_later(uow.writer, delta=2, key="k2", day=day, now=clock.now(), **args)
            uow.session  # noqa: B018 (asking for the session books the deferred posts)
            assert uow.writer.info.get("storage.points.later") is None
            ledger.post_later(uow.writer, delta=1, key="k3", day=day, now=clock.now(), **args)

        def rolled_back() -> None:
            with db.unit_of_work_sync() as uow:
                ledger.post_later(uow.writer, delta=9, key="k4", day=day, now=clock.now(), **args)
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            rolled_back()
        with db.session() as s:
            assert ledger.balance(s, "c1", "wmA") == 8 == ledger.ledger_sum(s, "c1", "wmA")
    finally:
        db.dispose()
