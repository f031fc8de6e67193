"""The CJK font for card tests (required in CI, a one-line skip elsewhere), and a sample card."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date

import pytest

from bot.cards.fonts import CardFont, FontNotFoundError, find_font
from bot.cards.render import CardData
from bot.config import DEFAULT_CARD_SLOGAN
from scripts_library import mentor

REQUIRE_ENV = "COHORTBOT_REQUIRE_CJK_FONT"


def cjk_font_or_skip() -> CardFont:
    try:
        return find_font()
    except FontNotFoundError as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(str(exc))
        pytest.skip(f"card tests need a CJK font: `make test` as root installs one ({exc})")


def sample_card(**changes: object) -> CardData:
    """A card with every field filled (a milestone reached, the next one ahead)."""
    data = CardData(
        name="小鱼",
        course="Python 21天入门训练营",
        day=date(2026, 11, 9),
        cohort_day=8,
        cohort_length=21,
        streak=7,
        total_checkins=7,
        reviews_given=3,
        points=48,
        mentor_message=mentor.templates()[0].render(
            {
                "name": "小鱼",
                "course": "Python",
                "day": 8,
                "streak": 7,
                "total": 7,
                "reviews": 3,
                "points": 48,
            }
        ),
        slogan=DEFAULT_CARD_SLOGAN,
        milestone_day=7,
        next_milestone_day=14,
    )
    return replace(data, **changes)  # type: ignore[arg-type]
