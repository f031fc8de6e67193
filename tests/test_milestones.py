"""Milestones (SPEC §5): congratulation with an @-mention, bonus, badge, exactly once."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bot.app import App
from bot.clock import ManualClock
from bot.context import Context
from bot.outbound import Channel, Kind
from bot.scheduler import CohortScheduler
from handlers.digest import teacher_digest_job
from scripts_library.toml_scripts import ScriptError, fields_of, load, render
from storage import milestones
from tests.builders import local
from tests.chat import balance, bot, entries, make_settings, open_bot, say, sent
from tests.conftest import GROUP_A, base_config

__all__ = ["bot"]


async def _streak(bot: App, member: str, days: int, first: int = 2) -> None:
    for d in range(first, first + days):
        await say(bot, member, f"#打卡 第{d - 1}天", local(2026, 11, d, 9), msgid=f"{member}-{d}")


async def test_seventh_day_is_celebrated_once_even_if_delivered_twice(bot: App) -> None:
    await _streak(bot, "wmKid", 6)
    assert [m for m in sent(bot) if m.channel is Channel.GROUP] == []
    await say(bot, "wmKid", "#打卡 第7天", local(2026, 11, 8, 9), msgid="seventh")
    await say(bot, "wmKid", "#打卡 第7天", local(2026, 11, 8, 9), msgid="seventh")
    congrats = [m for m in sent(bot) if m.channel is Channel.GROUP]
    assert len(congrats) == 1
    (msg,) = congrats
    assert (msg.to, msg.mentions, msg.key) == (GROUP_A, ("wmKid",), "milestone:c1:wmKid:7")
    assert "小明" in msg.text and "7" in msg.text
    assert ("milestone", 10) in entries(bot, "wmKid")
    assert balance(bot, "wmKid") == 7 * 2 + 10
    with bot.db.session() as s:
        assert [b.milestone for b in milestones.of_member(s, "c1", "wmKid")] == [7]


async def test_a_broken_streak_does_not_reach_the_milestone(bot: App) -> None:
    await _streak(bot, "wmKid", 3)
    await _streak(bot, "wmKid", 4, first=6)  # missed the 5th
    assert [m for m in sent(bot) if m.channel is Channel.GROUP] == []


async def test_the_card_seam(bot: App) -> None:
    seen: list[tuple[str, Mapping[str, object]]] = []

    def maker(ctx: Context, kind: str, fields: Mapping[str, object]) -> dict[str, object]:
        seen.append((kind, fields))
        return {"fake": kind}

    bot.pipeline.card_maker = maker
    await _streak(bot, "wmKid", 7)
    images = [m for m in sent(bot) if m.kind is Kind.IMAGE]
    assert len(images) == 1 and images[0].card == {"fake": "milestone"}
    assert seen[0][0] == "milestone" and seen[0][1]["days"] == 7


async def test_in_quiet_hours_the_post_waits_and_the_badge_does_not(bot: App) -> None:
    # The 7th check-in at 23:40: badge and bonus at once; the post (and card) at 07:30.
    bot.pipeline.card_maker = lambda ctx, kind, fields: {"fake": kind, **fields}
    await _streak(bot, "wmKid", 6)
    await say(bot, "wmKid", "#打卡 第7天", local(2026, 11, 8, 23, 40), msgid="late")
    assert [m for m in sent(bot) if m.channel is Channel.GROUP] == []
    assert balance(bot, "wmKid") == 7 * 2 + 10
    with bot.db.session() as s:
        assert [b.milestone for b in milestones.of_member(s, "c1", "wmKid")] == [7]
    clock = bot.clock
    assert isinstance(clock, ManualClock)
    scheduler = CohortScheduler(bot, jobs=[])
    await scheduler.run_until(clock, local(2026, 11, 9, 7, 29))
    assert [m for m in sent(bot) if m.channel is Channel.GROUP] == []
    await scheduler.run_until(clock, local(2026, 11, 9, 7, 31))
    text, card = [m for m in sent(bot) if m.channel is Channel.GROUP]
    assert (text.key, text.mentions) == ("milestone:c1:wmKid:7", ("wmKid",))
    assert "小明" in text.text and "7" in text.text
    assert card.kind is Kind.IMAGE and card.card is not None
    assert (card.card["fake"], card.card["member_id"], card.card["days"]) == (
        "milestone",
        "wmKid",
        7,
    )
    await scheduler.run_until(clock, local(2026, 11, 10, 8, 0))
    assert len([m for m in sent(bot) if m.channel is Channel.GROUP]) == 2  # posted once


async def test_a_night_owls_milestone_is_in_the_next_evenings_digest(bot: App) -> None:
    # The 7th check-in at 00:30 on 11-09 counts for learning day 11-08, whose digest went out
    # at 21:40 the evening before: the digest of 11-09 lists it (it used to be in neither).
    await _streak(bot, "wmKid", 6)
    clock = bot.clock
    assert isinstance(clock, ManualClock)
    clock.set(local(2026, 11, 8, 21, 40))
    await teacher_digest_job(bot, "teacher1")
    await say(bot, "wmKid", "#打卡 第7天", local(2026, 11, 9, 0, 30), msgid="night")
    clock.set(local(2026, 11, 9, 21, 40))
    await teacher_digest_job(bot, "teacher1")
    digests = [m.text for m in sent(bot) if m.to == "teacher1"]
    assert "### 今日里程碑\n无" in digests[0]
    assert "### 今日里程碑\n小明（第7天）" in digests[-1]


def test_every_script_renders_with_sample_values() -> None:
    sample = {
        "name": "{x}小明",
        "days": 7,
        "basis": "连续打卡",
        "bonus": 10,
        "course": "Python",
        "names": "@小明 @Amy",
        "points": 10,
        "chars": 12,
        "min_chars": 80,
        "cap": 3,
    }
    for library in ("milestones", "streaks", "reviews"):
        for script, variants in load(library).items():
            for template in variants:
                assert fields_of(template) <= set(sample), (library, script)
            for seed in range(len(variants) * 4):
                text = render(library, script, seed=str(seed), **sample)
                assert "{" not in text.replace("{x}", "")
    assert len(load("milestones")["congratulation"]) >= 3
    with pytest.raises(ScriptError):
        render("milestones", "congratulation")


async def test_milestone_on_total_days_when_configured(
    database_url: str, clock: ManualClock
) -> None:
    app = open_bot(make_settings(database_url, streaks={"milestone_basis": "total"}), clock)
    try:
        await _streak(app, "wmKid", 3)
        await _streak(app, "wmKid", 4, first=6)
        congrats = [m for m in sent(app) if m.channel is Channel.GROUP]
        assert len(congrats) == 1
        assert "累计打卡" in congrats[0].text
    finally:
        app.close()


async def test_day_after_the_start_is_used_for_the_streak(bot: App) -> None:
    # A check-in at 01:30 belongs to the previous learning day: the streak is not broken.
    await _streak(bot, "wmKid", 5)
    await say(bot, "wmKid", "#打卡 第6天", local(2026, 11, 8, 1, 30), msgid="late")
    await say(bot, "wmKid", "#打卡 第7天", local(2026, 11, 8, 9), msgid="d7")
    assert len([m for m in sent(bot) if m.channel is Channel.GROUP]) == 1


async def test_the_same_checkin_through_two_doors_pays_and_celebrates_once(bot: App) -> None:
    """The AI-bot callback and the archive carry the same message under different ids: the
    one-check-in-a-day rule and the badge keep it to one payment and one congratulation."""
    from tests.builders import archive_text, pair

    await _streak(bot, "wmKid", 6)
    at = local(2026, 11, 8, 9)
    await say(bot, "wmKid", "#打卡 第7天", at, msgid="via-aibot")
    await bot.pipeline.ingest([pair(archive_text(GROUP_A, "wmKid", "#打卡 第7天", at))])
    assert len([m for m in sent(bot) if m.channel is Channel.GROUP]) == 1
    assert balance(bot, "wmKid") == 7 * 2 + 10


@pytest.mark.parametrize("paid", [False, True], ids=["no-bonus", "bonus-on-the-last"])
async def test_the_last_milestone_and_one_without_a_bonus_say_so(
    database_url: str, clock: ManualClock, paid: bool
) -> None:
    """Milestones on days 3 and 5 of c1, which the default bonus table (7, 14, 21, 28) does not
    pay: no "奖励0积分", and the last one has no "see you at the next milestone"."""
    cohorts = base_config()["cohorts"]
    cohorts[0]["milestone_days"] = [3, 5]
    points = {"milestone_bonus": {"5": 40}} if paid else {}
    app = open_bot(make_settings(database_url, cohorts=cohorts, points=points), clock)
    try:
        await _streak(app, "wmKid", 5)
        texts = [m.text for m in sent(app) if m.channel is Channel.GROUP]
    finally:
        app.close()
    assert len(texts) == 2, texts
    third, fifth = texts
    assert "3天" in third and "积分" not in third
    assert "5天" in fifth and ("本期最高" in fifth or "本期最后" in fifth)
    assert "下个里程碑" not in fifth
    assert ("40积分" in fifth) if paid else ("积分" not in fifth)


@pytest.mark.parametrize("basis", ["streak", "total"])
async def test_a_learners_standing_towards_the_milestones(
    database_url: str, clock: ManualClock, basis: str
) -> None:
    """Seven days in a row (the 7-day badge), a day missed, six more: under the streak basis
    the next milestone, 14, is 8 days away; under the total basis 13 days count, 1 away."""
    from bot.radar import MemberRisk, Stage
    from handlers.nudges import Standing, standings

    app = open_bot(make_settings(database_url, streaks={"milestone_basis": basis}), clock)
    try:
        await _streak(app, "wmKid", 7)  # 11-02..11-08
        await _streak(app, "wmKid", 6, first=10)  # 11-10..11-15
        risk = MemberRisk(
            GROUP_A, "wmKid", "小明", "external", None, Stage.ADVANCING, 1, [], 0, 6, True
        )
        cohort = app.settings.cohort("c1")
        with app.db.session() as session:
            standing = standings(session, app.settings, cohort)(risk)
    finally:
        app.close()
    value = 6 if basis == "streak" else 13
    assert standing == Standing(value, frozenset({7}))
    assert standing.next(cohort) == 14
