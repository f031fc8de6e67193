"""The real card renderer wired into the pipeline (SPEC §5, §9): a milestone congratulation is
followed by the learner's card as an image, and ``我的`` answers with the card too."""

from __future__ import annotations

import logging

import pytest

from bot.app import App
from bot.cards import member
from bot.cards.fonts import FontNotFoundError
from bot.cards.member import card_for
from bot.cards.render import MAX_BYTES
from bot.outbound import Channel, Kind
from tests.builders import local
from tests.cardfont import cjk_font_or_skip
from tests.chat import bot, say, sent
from tests.conftest import GROUP_A

__all__ = ["bot"]


async def test_milestone_and_progress_send_the_real_card(bot: App) -> None:
    cjk_font_or_skip()
    bot.pipeline.card_renderer = card_for
    for d in range(2, 9):  # seven daily check-ins: the 7-day milestone
        await say(bot, "wmKid", f"#打卡 第{d - 1}天", local(2026, 11, d, 9), msgid=f"k{d}")
    images = [m for m in sent(bot) if m.kind is Kind.IMAGE]
    assert [(m.channel, m.to, m.key) for m in images] == [
        (Channel.GROUP, GROUP_A, "milestone:c1:wmKid:7:card")
    ]
    png = images[0].image
    assert png is not None and png.startswith(b"\x89PNG") and len(png) < MAX_BYTES
    await say(bot, "wmKid", "/我的", local(2026, 11, 8, 20), msgid="mine")
    mine = [m for m in sent(bot) if m.kind is Kind.IMAGE and m.channel is Channel.REPLY]
    assert len(mine) == 1
    assert mine[0].image is not None and mine[0].image.startswith(b"\x89PNG")


async def test_without_a_font_cards_are_skipped_with_one_warning(
    bot: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_font(*_args: object) -> bytes:
        raise FontNotFoundError("no CJK font found for cards (test)")

    monkeypatch.setattr(member, "member_card", no_font)
    monkeypatch.setattr(member, "_FONT_PROBLEMS_TOLD", set())
    bot.pipeline.card_renderer = card_for
    with caplog.at_level(logging.DEBUG, logger="bot.cards.member"):
        for n in range(3):
            await say(bot, "wmKid", "/我的", local(2026, 11, 8, 20, n), msgid=f"mine{n}")
    told = [(r.levelno, r.getMessage()) for r in caplog.records if "not drawn" in r.getMessage()]
    assert [level for level, _ in told] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert not [m for m in sent(bot) if m.kind is Kind.IMAGE]
    assert len([m for m in sent(bot) if m.channel is Channel.REPLY]) == 3  # the text answers
