"""The points/reviews/shop/streaks config sections: defaults and one-line errors."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import ConfigError, load_settings, parse_settings
from tests.conftest import base_config


def _parse(**sections: Any) -> Any:
    return parse_settings(base_config(**sections), env={})


def test_spec_defaults() -> None:
    s = _parse()
    assert (s.points.checkin, s.points.self_intro, s.points.review, s.points.quiz) == (2, 5, 10, 3)
    assert dict(s.points.milestone_bonus) == {7: 10, 14: 20, 21: 30, 28: 50}
    assert (s.reviews.min_chars, s.reviews.daily_cap) == (80, 3)
    assert (s.streaks.makeup_cards, s.streaks.reminder_time) == (2, "20:30")
    assert s.catalog == ()


def test_daily_caps_set_the_reasons_they_name() -> None:
    caps = _parse(points={"daily_caps": {"intro": 0, "milestone": 40}}).points.daily_caps
    assert dict(caps) == {"checkin": 2, "intro": 0, "review": 0, "quiz": 30, "milestone": 40}


def test_the_example_config_documents_every_section() -> None:
    s = load_settings("config.example.toml", env={})
    assert s.catalog[0].sku == "A01"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"points": {"chekin": 3}}, "points.chekin: unknown key (did you mean 'checkin'?)"),
        (
            {"points": {"daily_caps": {"self_intro": 0}}},
            "points.daily_caps.self_intro: unknown key (did you mean 'intro'?)",
        ),
        ({"points": {"daily_caps": {"quiz": -1}}}, "points.daily_caps.quiz: -1 is outside"),
        ({"points": {"milestone_bonus": {"seven": 3}}}, "points.milestone_bonus.seven: expected"),
        ({"reviews": {"similarity_threshold": 2}}, "reviews.similarity_threshold: expected a"),
        ({"streaks": {"reminder_time": "25:00"}}, "streaks.reminder_time: '25:00' is not a time"),
        ({"streaks": {"reminder_channel": "sms"}}, "streaks.reminder_channel: expected"),
        (
            {"shop": {"items": [{"sku": "A", "name": "x", "cost": 1, "stock": 1}] * 2}},
            "shop.items[1].sku: 'A' is used twice",
        ),
        ({"shop": {"items": [{"sku": "A 1", "name": "x", "cost": 1, "stock": 1}]}}, "may use"),
        ({"shop": {"items": [{"sku": "A", "name": "x", "cost": 0, "stock": 1}]}}, "outside"),
    ],
)
def test_errors_name_the_key(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _parse(**sections)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
