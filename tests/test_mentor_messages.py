"""The mentor-message library: every template renders, with known placeholders, at 100-150 chars."""

from __future__ import annotations

import pytest

from scripts_library import mentor

SHORT = {
    "name": "小鱼",
    "course": "Python 21天入门",
    "day": 1,
    "streak": 0,
    "total": 0,
    "reviews": 0,
    "points": 0,
}
LONG = {
    **SHORT,
    "name": "一二三四五六七八九十一二三四五六七八九十",
    "day": 21,
    "streak": 21,
    "total": 21,
    "reviews": 35,
    "points": 1280,
}


def test_library_has_at_least_eight_checked_templates() -> None:
    library = mentor.templates()
    assert len(library) >= 8
    assert len({t.id for t in library}) == len(library)
    for template in library:
        assert template.fields <= mentor.PLACEHOLDERS
        assert "name" in template.fields


@pytest.mark.parametrize("values", [SHORT, LONG], ids=["short-name", "20-char-name"])
def test_every_template_renders_within_100_to_150_chars(values: dict[str, object]) -> None:
    lengths = {t.id: len(t.render(values)) for t in mentor.templates()}
    fitting = [i for i, n in lengths.items() if mentor.MIN_CHARS <= n <= mentor.MAX_CHARS]
    # Most templates fit whatever the name; the chooser only ever picks fitting ones.
    assert len(fitting) >= 6, lengths
    chosen = mentor.choose(values, seed="c1:wmU1:2026-11-05")
    assert mentor.MIN_CHARS <= len(chosen) <= mentor.MAX_CHARS
    assert str(values["name"]) in chosen


def test_choice_is_stable_per_seed_and_varies_across_seeds() -> None:
    assert mentor.choose(SHORT, "a") == mentor.choose(SHORT, "a")
    assert len({mentor.choose(LONG, f"seed{i}") for i in range(40)}) >= 3


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{nmae}，加油", "unknown placeholder"),
        ("{0}，加油", "plain named field"),
        ("{name:>10}，加油", "plain named field"),
        ("{name!r}，加油", "plain named field"),
        ("{name，加油", "mentor message 'bad'"),
    ],
)
def test_malformed_templates_are_refused(text: str, error: str) -> None:
    with pytest.raises(mentor.TemplateError, match=error):
        mentor.parse_templates({"messages": [{"id": "bad", "text": text}]})


def test_a_missing_value_is_an_error_not_a_blank() -> None:
    template = mentor.MentorTemplate("t", "{name}在第{day}天")
    with pytest.raises(mentor.TemplateError, match="day"):
        template.render({"name": "小鱼"})


def test_a_count_of_zero_is_never_praised() -> None:
    """A learner with no reviews (or no streak) never reads "写了0条点评" on their card."""
    values = {**LONG, "name": "小鱼", "reviews": 0, "streak": 0}
    chosen = {mentor.choose(values, seed=f"s{i}") for i in range(200)}
    assert chosen and not any("0条点评" in c or "连续坚持0天" in c for c in chosen)
    with_reviews = {**LONG, "name": "小鱼", "reviews": 3}
    assert any("3条点评" in mentor.choose(with_reviews, seed=f"s{i}") for i in range(200))
    # A first-day learner (no check-ins yet) still gets a message, just not a count of zero.
    assert "0天" not in mentor.choose(SHORT, "first")


def _ids(values: dict[str, object]) -> set[str]:
    return {mentor.choose_template(values, seed=f"s{i}").id for i in range(300)}


BASE = {"name": "小鱼", "course": "Python 28天实战训练营", "reviews": 0, "points": 80}


def test_the_message_fits_where_the_learner_is() -> None:
    # Day 28 of 28 on a 17-day streak: no first-days welcome, no "come back", no "from today on".
    last_day = _ids({**BASE, "day": 28, "days_left": 1, "streak": 17, "total": 24})
    assert last_day and not last_day & {"start", "comeback", "course"}
    assert {"steady", "milestone", "habit", "sprint"} <= last_day
    # Day 2 with two check-ins: the first-days welcome, never the final stretch or a milestone.
    day_two = _ids({**BASE, "day": 2, "days_left": 27, "streak": 2, "total": 2})
    assert "start" in day_two and not day_two & {"sprint", "milestone", "comeback", "steady"}
    # Checked in again after a gap: the come-back message is among the candidates.
    back = _ids({**BASE, "day": 12, "days_left": 17, "streak": 1, "total": 6})
    assert "comeback" in back and not back & {"steady", "habit", "milestone", "start"}


def test_a_learner_with_nothing_yet_gets_the_message_that_names_no_count() -> None:
    nothing = {**BASE, "day": 10, "days_left": 19, "streak": 0, "total": 0, "points": 0}
    assert _ids(nothing) == {"anyday"}
    text = mentor.choose(nothing, "s")
    assert text.startswith("小鱼，这是《Python 28天实战训练营》的第10天。")


def test_conditions_are_checked_when_the_file_is_read() -> None:
    parsed = mentor.parse_templates(
        {"messages": [{"id": "a", "text": "{name}", "min_streak": 3, "max_streak": 9}]}
    )
    assert parsed[0].conditions == (("streak", 3, 9),)
    assert parsed[0].fits({"streak": 3}) and not parsed[0].fits({"streak": 10})
    assert not parsed[0].fits({})  # a number not given fails its condition
    for bad, error in [
        ({"min_mood": 1}, "unknown key 'min_mood'"),
        ({"least_day": 1}, "unknown key 'least_day'"),
        ({"max_day": "3"}, "max_day must be a whole number"),
        ({"max_day": True}, "max_day must be a whole number"),
    ]:
        with pytest.raises(mentor.TemplateError, match=error):
            mentor.parse_templates({"messages": [{"id": "b", "text": "{name}", **bad}]})
