"""The real card maker wired into the pipeline (SPEC §5, §9): a milestone congratulation is
followed by the learner's card, and ``我的`` answers with the card too. The card is queued as its
numbers and drawn only when it is delivered (``card_png``), never while the update is processed."""

from __future__ import annotations

import logging

import pytest

from bot.app import App
from bot.cards import member, render
from bot.cards.fonts import FontNotFoundError
from bot.cards.member import card_for, card_png
from bot.cards.render import MAX_BYTES, CardData, RenderedCard
from bot.outbound import Channel, Kind
from tests.builders import local
from tests.cardfont import cjk_font_or_skip, sample_card
from tests.chat import bot, say, sent
from tests.conftest import GROUP_A

__all__ = ["bot"]


async def test_milestone_and_progress_send_the_real_card(
    bot: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    cjk_font_or_skip()
    drawn: list[CardData] = []
    draw = render._draw

    def counted(data: CardData, font: object) -> RenderedCard:
        drawn.append(data)
        return draw(data, font)  # type: ignore[arg-type]

    monkeypatch.setattr(render, "_draw", counted)
    bot.pipeline.card_maker = card_for
    for d in range(2, 9):  # seven daily check-ins: the 7-day milestone
        await say(bot, "wmKid", f"#打卡 第{d - 1}天", local(2026, 11, d, 9), msgid=f"k{d}")
    images = [m for m in sent(bot) if m.kind is Kind.IMAGE]
    assert [(m.channel, m.to, m.key) for m in images] == [
        (Channel.GROUP, GROUP_A, "milestone:c1:wmKid:7:card")
    ]
    card = images[0].card
    assert card is not None and images[0].image is None
    assert (card["streak"], card["total_checkins"], card["milestone_day"]) == (7, 7, 7)
    assert drawn == []  # processing the check-ins drew nothing
    png = card_png(card, bot.settings)
    assert png.startswith(b"\x89PNG") and len(png) < MAX_BYTES
    assert [d.streak for d in drawn] == [7]
    await say(bot, "wmKid", "/我的", local(2026, 11, 8, 20), msgid="mine")
    mine = [m for m in sent(bot) if m.kind is Kind.IMAGE and m.channel is Channel.REPLY]
    assert len(mine) == 1 and mine[0].card is not None
    assert card_png(mine[0].card, bot.settings).startswith(b"\x89PNG")


def test_a_card_round_trips_through_json_and_bad_ones_are_named() -> None:
    data = sample_card(day=local(2026, 11, 8, 9).date(), next_milestone_day=None)
    as_json = data.to_json()
    assert as_json["day"] == "2026-11-08" and as_json["next_milestone_day"] is None
    assert CardData.from_json(as_json) == data
    without_optional = {k: v for k, v in as_json.items() if k != "milestone_day"}
    assert CardData.from_json(without_optional).milestone_day is None
    # A card queued before a field with a default existed is drawn with the default.
    older = {k: v for k, v in as_json.items() if k != "milestone_basis"}
    assert CardData.from_json({**as_json, "milestone_basis": "total"}).milestone_basis == "total"
    assert CardData.from_json(older).milestone_basis == "streak"
    for broken, problem in [
        ({**as_json, "day": "11/08"}, "field 'day' is not a YYYY-MM-DD date"),
        ({**as_json, "streak": "7"}, "field 'streak' is not a whole number"),
        ({**as_json, "points": True}, "field 'points' is not a whole number"),
        ({**as_json, "name": None}, "field 'name' is not text"),
        ({k: v for k, v in as_json.items() if k != "course"}, "missing field 'course'"),
        ({**as_json, "colour": "red"}, "unknown field 'colour'"),
    ]:
        with pytest.raises(ValueError, match=problem):
            CardData.from_json(broken)


async def test_without_a_font_cards_are_skipped_with_one_warning(
    bot: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_font(*_args: object) -> object:
        raise FontNotFoundError("no CJK font found for cards (test)")

    monkeypatch.setattr(member, "card_font", no_font)
    monkeypatch.setattr(member, "_FONT_PROBLEMS_TOLD", set())
    bot.pipeline.card_maker = card_for
    with caplog.at_level(logging.DEBUG, logger="bot.cards.member"):
        for n in range(3):
            await say(bot, "wmKid", "/我的", local(2026, 11, 8, 20, n), msgid=f"mine{n}")
    told = [(r.levelno, r.getMessage()) for r in caplog.records if "not drawn" in r.getMessage()]
    assert [level for level, _ in told] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert not [m for m in sent(bot) if m.kind is Kind.IMAGE]
    assert len([m for m in sent(bot) if m.channel is Channel.REPLY]) == 3  # the text answers


async def test_a_private_card_after_an_early_end_uses_the_moved_dates(bot: App) -> None:
    """结营 on 11-11 (day 10 of the configured 21): ``我的`` in a private chat on 11-12 says
    第 10/10 天 and 已结营; its card counts the same days (it used the config's 第 11 / 21 天) and
    shows no next milestone (no check-in counts any more) and a mentor message that looks back."""
    font = cjk_font_or_skip()
    bot.pipeline.card_maker = card_for
    for d in range(8, 12):  # a 4-day streak up to the new last day
        await say(bot, "wmKid", "#打卡", local(2026, 11, d, 9), msgid=f"k{d}")
    await say(bot, "leader1", "/结营", local(2026, 11, 11, 20))
    text = (await say(bot, "wmKid", "/我的", local(2026, 11, 12, 10), chat=""))[0]
    assert "第 10/10 天" in text and "训练营已于 11-11 结营" in text
    (image,) = [m for m in sent(bot) if m.kind is Kind.IMAGE and m.channel is Channel.REPLY]
    assert image.card is not None
    data = CardData.from_json(image.card)
    assert (data.cohort_day, data.cohort_length, data.streak) == (11, 10, 4)
    drawn = [b.source for b in render.render_card(data, font).texts]
    assert "已结营" in drawn and "训练营已结营，打卡记录到此为止" in drawn
    assert not any("解锁" in t for t in drawn), drawn
    message = data.mentor_message
    assert "结营" in message and "第11天" not in message and "终点就在前方" not in message
