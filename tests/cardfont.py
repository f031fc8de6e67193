"""The CJK font for card tests: required in CI, a one-line skip elsewhere."""

from __future__ import annotations

import os

import pytest

from bot.cards.fonts import CardFont, FontNotFoundError, find_font

REQUIRE_ENV = "COHORTBOT_REQUIRE_CJK_FONT"


def cjk_font_or_skip() -> CardFont:
    try:
        return find_font()
    except FontNotFoundError as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(str(exc))
        pytest.skip(f"card tests need a CJK font: `make test` as root installs one ({exc})")
