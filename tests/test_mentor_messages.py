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


BEFORE = {"before_welcome", "before_wish"}
AFTER = {"after_lookback", "after_streak", "after_reviews", "after_anyway"}


def test_after_the_end_the_message_looks_back() -> None:
    # Day 22 of 21 (days_left 0): no "第22天 … 保持现在的节奏…一起走下去", no final sprint.
    after = {**BASE, "day": 22, "days_left": 0, "streak": 17, "total": 19, "reviews": 4}
    assert mentor.stage_of(after) == "after"
    assert _ids(after) == AFTER
    for i in range(50):
        text = mentor.choose(after, f"s{i}")
        assert "结营" in text and "第22天" not in text and "一起走下去" not in text
        assert mentor.MIN_CHARS <= len(text) <= mentor.MAX_CHARS
    # After an early 结营 (day 11 of a cohort cut to 10): not "来到第11天，终点就在前方".
    early = {**after, "day": 11}
    assert _ids(early) == AFTER and "sprint" not in _ids(early)
    # Nothing counted: the look back that names no count.
    nothing = {**BASE, "day": 30, "days_left": 0, "streak": 0, "total": 0, "points": 0}
    assert _ids(nothing) == {"after_anyway"}


def test_before_the_start_the_message_is_for_someone_about_to_begin() -> None:
    # 11-01 for a cohort starting 11-02 is day 0 (我的 says 第 0/21 天): no "欢迎来到训练营的第1天".
    for day in (0, -3):
        before = {**BASE, "day": day, "days_left": 22 - day, "streak": 0, "total": 0}
        assert mentor.stage_of(before) == "before"
        assert _ids(before) == BEFORE
        for i in range(20):
            text = mentor.choose(before, f"s{i}")
            assert "开营" in text and "第1天" not in text and f"第{day}天" not in text
            assert mentor.MIN_CHARS <= len(text) <= mentor.MAX_CHARS
    # During the cohort none of those is picked.
    during = {**BASE, "day": 1, "days_left": 21, "streak": 1, "total": 1}
    assert mentor.stage_of(during) == "during" and not _ids(during) & (BEFORE | AFTER)


def test_stages_are_checked_when_the_file_is_read() -> None:
    (parsed,) = mentor.parse_templates(
        {"messages": [{"id": "a", "text": "{name}，结营啦", "stage": "after", "min_total": 1}]}
    )
    assert (parsed.stage, parsed.conditions) == ("after", (("total", 1, None),))
    assert parsed.fits({"day": 9, "days_left": 0, "total": 3})
    assert not parsed.fits({"day": 9, "days_left": 1, "total": 3})
    assert mentor.parse_templates({"messages": [{"id": "b", "text": "{name}"}]})[0].stage == (
        "during"
    )
    for bad, error in [
        ({"stage": "later"}, "stage 'later' is not one of"),
        ({"stage": 2}, "stage must be one of"),
        ({"stage": "before", "text": "{name}第{day}天"}, r"'before' message cannot name \['day"),
        ({"stage": "after", "text": "{name}还剩{days_left}天"}, r"cannot name \['days_left'\]"),
    ]:
        with pytest.raises(mentor.TemplateError, match=error):
            mentor.parse_templates({"messages": [{"id": "c", "text": "{name}", **bad}]})


def test_when_no_message_of_the_stage_fits_another_of_the_stage_is_taken() -> None:
    library = mentor.parse_templates(
        {
            "messages": [
                {"id": "during", "text": "{name}，第{day}天"},
                {"id": "after", "text": "{name}，结营啦", "stage": "after", "min_total": 5},
            ]
        }
    )
    nothing = {"name": "小鱼", "day": 22, "days_left": 0, "total": 0}
    assert mentor.choose_template(nothing, "s", library).id == "after"
