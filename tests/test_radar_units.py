"""Pure parts of the radar and nudges: stages, levels, timing, delivery, safe rendering, split."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from bot.config import NudgeSettings, parse_settings
from bot.radar import Stage, level_of, parse_stage, stage_of
from handlers.digest import split_markdown
from handlers.nudges import (
    APP_MESSAGE,
    MSG_TEMPLATE,
    NO_ROUTE,
    days_left,
    delivery_route,
    in_quiet_hours,
    may_send_at,
    pick_send_time,
)
from scripts_library import nudges as library
from tests.conftest import base_config

SH = ZoneInfo("Asia/Shanghai")


def test_stages_follow_the_cohort_day() -> None:
    cohort = parse_settings(base_config(), env={}).cohort("c1")  # 21 days from 2026-11-02
    start = cohort.start_date
    expected = {
        1: Stage.NEWCOMER,
        3: Stage.NEWCOMER,
        4: Stage.ADAPTING,
        7: Stage.ADAPTING,
        8: Stage.ADVANCING,
        14: Stage.ADVANCING,
        15: Stage.SPRINT,
        18: Stage.SPRINT,
        19: Stage.CLOSING,
        21: Stage.CLOSING,
        22: Stage.AFTER,
    }
    for n, stage in expected.items():
        assert stage_of(cohort, date.fromordinal(start.toordinal() + n - 1)) is stage, n
    assert parse_stage("冲刺期") is Stage.SPRINT
    assert parse_stage("结营后") is Stage.AFTER
    assert parse_stage("随便") is None


def test_days_left_counts_today() -> None:
    cohort = parse_settings(base_config(), env={}).cohort("c1")  # 21 days from 2026-11-02
    assert days_left(cohort, date(2026, 11, 2)) == 21
    assert days_left(cohort, date(2026, 11, 22)) == 1  # the last day: "还剩1天", not 0
    assert days_left(cohort, date(2026, 11, 23)) == 0


def test_levels() -> None:
    assert [level_of(n) for n in range(7)] == [0, 1, 1, 2, 2, 3, 3]


def test_windows_and_quiet_hours() -> None:
    ns = NudgeSettings()
    monday = datetime(2026, 11, 2, 19, 15, tzinfo=SH)
    assert may_send_at(monday, ns)
    assert not may_send_at(monday.replace(hour=18, minute=59), ns)
    assert not may_send_at(monday.replace(hour=21, minute=30), ns)
    saturday = datetime(2026, 11, 7, 10, 5, tzinfo=SH)
    assert may_send_at(saturday, ns)
    assert not may_send_at(saturday.replace(hour=20, minute=1), ns)
    assert in_quiet_hours(monday.replace(hour=23), ns)
    assert in_quiet_hours(monday.replace(hour=6, minute=59), ns)
    assert not in_quiet_hours(monday.replace(hour=7, minute=30), ns)
    # A window that overlaps quiet hours is cut by them.
    late = NudgeSettings(weekday_window=((21, 0), (23, 59)))
    assert not may_send_at(monday.replace(hour=22, minute=45), late)


def test_send_times_avoid_round_minutes_and_spread() -> None:
    ns = NudgeSettings()
    now = datetime(2026, 11, 2, 19, 0, tzinfo=SH)
    times = {pick_send_time(now, ns, f"m{i}") for i in range(200)}
    assert len(times) > 50
    for t in times:
        assert t.minute % 30 not in (28, 29, 0, 1, 2)
        assert may_send_at(t, ns)


def test_delivery_route_by_member_kind() -> None:
    assert delivery_route("zhangsan", "internal", None).kind == APP_MESSAGE
    ext = delivery_route("wmAbc", "external", "teacher1")
    assert (ext.kind, ext.sender, ext.to) == (MSG_TEMPLATE, "teacher1", "wmAbc")
    assert delivery_route("wmAbc", "external", None).kind == NO_ROUTE


def test_render_inserts_user_values_literally() -> None:
    text = library.render(
        "{name}你好，你有{points}积分", {"name": "{points}{0.__class__}", "points": 5}
    )
    assert text == "{points}{0.__class__}你好，你有5积分"


def test_parsed_templates_render_exactly_like_render() -> None:
    values: dict[str, object] = {
        name: f"{{{name}}}{{0.__class__}}{{{{" for name in library.PLACEHOLDERS
    }
    values["points"] = 0
    templates = [v for s in library.load() for v in s.variants]
    templates += ["{{字面}} {name} {missing} }}{{ {", "", "{name}"]
    for template in templates:
        parsed = library.compiled(template)
        assert parsed.fields == tuple(library.fields(template))
        for vals in (values, {}, {"name": "小王"}):
            assert parsed.render(vals) == library.render(template, vals), template


def test_group_check_in_rate_is_fmean_to_the_last_bit() -> None:
    import random
    import statistics

    from bot.radar import _mean_of_thirds

    rnd = random.Random(3)
    for n in (1, 2, 3, 7, 199, 200, 1000):
        for _ in range(30):
            counts = [rnd.randrange(4) for _ in range(n)]
            assert _mean_of_thirds(counts) == statistics.fmean(k / 3 for k in counts)


def test_placeholder_values_follow_the_group_day_and_teacher() -> None:
    """values_for keeps what a group shares on a day once; each group, day and teacher still
    gets its own values."""
    from bot.radar import MemberRisk
    from handlers.nudges import values_for
    from tests.conftest import GROUP_A, GROUP_B

    cohort = parse_settings(base_config(), env={}).cohort("c1")

    def risk(chat_id: str) -> MemberRisk:
        return MemberRisk(chat_id, "wm1", "小王", "external", None, Stage.SPRINT, 1, [], 3, 2, True)

    day = cohort.start_date
    a = values_for(None, cohort, risk(GROUP_A), day, "李老师", 5)  # type: ignore[arg-type]
    b = values_for(None, cohort, risk(GROUP_B), day, "王老师", 7)  # type: ignore[arg-type]
    later = values_for(None, cohort, risk(GROUP_A), day.replace(day=day.day + 2), "李老师", 5)  # type: ignore[arg-type]
    assert (a["group"], a["teacher"], a["cohort_day"], a["points"]) == ("一班", "李老师", 1, 5)
    assert (b["group"], b["teacher"], b["points"]) == ("二班", "王老师", 7)
    assert (later["cohort_day"], later["days_left"]) == (3, a["days_left"] - 2)  # type: ignore[operator]
    assert a["name"] == "小王" and a["stage"] == "冲刺期" and a["days_to_milestone"] == 5
    a["group"] = "changed"  # a caller's copy: the shared values stay as they were
    again = values_for(None, cohort, risk(GROUP_A), day, "李老师", 5)  # type: ignore[arg-type]
    assert again["group"] == "一班"


def test_library_lints_clean_and_is_large_enough() -> None:
    scripts = library.load()
    assert library.lint(scripts) == []
    assert len({s.scenario for s in scripts}) >= 20
    assert all(len(s.variants) >= 3 for s in scripts)
    assert {st for s in scripts for st in s.stages} == set(library.STAGES)


def test_lint_catches_problems(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bad.toml").write_text(
        '[[script]]\nid="x"\nscenario="long_silence"\nstages=["newcomer"]\nlevels=["light"]\n'
        'variants=["{nmae}你好", "{name}' + "长" * 800 + '", "{name}"]\n',
        "utf-8",
    )
    problems = library.lint(library.load(tmp_path))
    text = "\n".join(problems)
    assert "unknown placeholder {nmae}" in text
    assert "bytes rendered, limit 2048" in text
    assert "coverage: no script for scenario 'no_intro'" in text


def test_split_markdown_fits_and_keeps_lines() -> None:
    lines = [f"{i}. **学员{i}** 中度警报 · 未发言{i}天 · " + "信号说明" * 20 for i in range(200)]
    text = "\n".join(lines)
    parts = split_markdown(text)
    assert len(parts) > 1
    assert all(len(p.encode()) <= 4096 for p in parts)
    assert "\n".join(parts) == text
    huge = split_markdown("字" * 5000)
    assert all(len(p.encode()) <= 4096 for p in huge) and "".join(huge) == "字" * 5000
    # A quiet-list entry (name, signals, script) is not split across two messages.
    entries = [
        f"{i}. **学员{i}** 高危警报\n   > 信号：{'长时间未发言' * 9}\n   > 建议话术：{'你好' * 40}"
        for i in range(1, 76)
    ]
    text = "### 潜水预警（75人）\n" + "\n".join(entries)
    parts = split_markdown(text)
    assert len(parts) > 3 and "\n".join(parts) == text
    assert all(len(p.encode()) <= 4096 and not p.startswith("   ") for p in parts)


def test_choose_uses_each_postcard_and_variant_once() -> None:
    from handlers.nudges import choose, text_hash

    cards = ("卡片一：变量就是给数据起名字。", "卡片二：函数把重复的步骤收起来。")
    used: set[tuple[str, int]] = set()
    hashes: set[str] = set()
    used_cards: set[int] = set()
    texts = []
    for _ in range(8):
        c = choose(
            ["knowledge_postcard"],
            "sprint",
            1,
            {"name": "小明", "course": "Python"},
            used,
            hashes,
            cards,
            used_cards,
            "seed",
        )
        if c is None:
            break
        texts.append(c.text)
        used.add((c.script.id, c.variant))
        hashes.add(text_hash(c.text))
        if c.postcard is not None:
            used_cards.add(c.postcard)
    assert len(texts) == 2  # two postcards, each used once
    assert len(set(texts)) == 2


def test_nudge_settings_parse_and_refuse_typos() -> None:
    import pytest

    from bot.config import ConfigError

    s = parse_settings(
        base_config(nudges={"weekday_window": "18:30-21:00", "postcards": ["a"]}), env={}
    )
    assert s.nudges.weekday_window == ((18, 30), (21, 0))
    assert s.nudges.postcards == ("a",)
    assert len(s.nudges.offers) == 5
    with pytest.raises(ConfigError, match=r"nudges\.quiet_hour"):
        parse_settings(base_config(nudges={"quiet_hour": "1"}), env={})
    with pytest.raises(ConfigError, match=r"radar\.volume_ratio"):
        parse_settings(base_config(radar={"volume_ratio": 3}), env={})


def test_split_markdown_matches_the_line_by_line_split() -> None:
    """The split found in the encoded text is the line-by-line one, parts ending exactly at the
    limit, empty lines and lines longer than the limit included."""
    import random

    from handlers.digest import _split_lines

    rnd = random.Random(3)
    pieces = ["a", "字", " ", "\n", "\n", "✅", "\n\n", "\n   > "]
    for _ in range(3000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 80)))
        limit = rnd.randint(4, 24)
        assert split_markdown(text, limit) == _split_lines(text, limit), (text, limit)


def test_digest_suggestions_choose_what_suggestion_chooses() -> None:
    """The digest's Suggestions (worked out once per kind of learner) give every learner the
    script and text suggestion() gives it: every stage, level, signal set, streak near a
    milestone or not, holding, empty name, weekend and postcards."""
    import itertools

    from bot.radar import Fired, MemberRisk, Signal
    from handlers.digest import Suggestions, suggestion
    from handlers.nudges import Standing
    from tests.conftest import GROUP_A, GROUP_B

    none: frozenset[int] = frozenset()

    cohort = parse_settings(base_config(), env={}).cohort("c1")
    signal_sets = [
        [Signal.SILENCE],
        [Signal.NO_INTRO, Signal.SILENCE],
        [Signal.CHECKIN_DROP, Signal.STREAK_BROKEN, Signal.NO_CHECKIN],
        [Signal.VOLUME_DROP, Signal.IGNORED_NUDGE, Signal.LOW_PROGRESS, Signal.NO_INTRO,
         Signal.NO_CHECKIN],
        [Signal.NO_INTRO],
    ]  # fmt: skip
    checked = 0

    def standing(risk: MemberRisk) -> Standing:  # a third have the 7-day badge
        return Standing(risk.streak, frozenset({7}) if int(risk.member_id[2:]) % 3 == 0 else none)

    for postcards in ((), ("卡片一：变量就是给数据起名字。",), ("",)):
        for day in (cohort.start_date, date(2026, 11, 7), date(2026, 11, 20), date(2026, 12, 1)):
            suggest = Suggestions(cohort, day, postcards, standing)
            for i, (signals, stage, streak, holding, name, chat) in enumerate(
                itertools.product(
                    signal_sets, list(Stage), (0, 1, 5, 6, 40), (False, True), ("小王", ""),
                    (GROUP_A, GROUP_B),
                )
            ):  # fmt: skip
                fired = [Fired(s, "原因") for s in signals]
                level = 3 if len(fired) >= 5 else 2 if len(fired) >= 3 else 1
                risk = MemberRisk(
                    chat, f"wm{i}", name, "external", None, stage, level, fired, 4, streak, True,
                    holding,
                )  # fmt: skip
                teacher = "李老师" if chat == GROUP_A else ""
                expected = suggestion(
                    None,  # type: ignore[arg-type]
                    cohort, risk, day, teacher, postcards, i, standing(risk),
                )  # fmt: skip
                assert suggest(risk, teacher, i) == expected, (risk, day, postcards)
                checked += expected[0] != "—"
    assert checked > 1000


def test_a_learner_who_never_spoke_gets_a_never_spoken_script_in_every_running_stage() -> None:
    """Late in a cohort, someone who never said a word was suggested the stage's generic script
    ("回头看看第一天的自己，是不是已经不一样了？"), which presumes they took part."""
    from bot.radar import Fired, MemberRisk, Signal
    from handlers.digest import suggestion
    from tests.conftest import GROUP_A

    cohort = parse_settings(base_config(), env={}).cohort("c1")
    fired = [Fired(s, "原因") for s in (Signal.SILENCE, Signal.NO_INTRO, Signal.NO_CHECKIN)]
    chosen = {}
    for stage, day in [
        (Stage.NEWCOMER, date(2026, 11, 3)),
        (Stage.ADVANCING, date(2026, 11, 12)),
        (Stage.SPRINT, date(2026, 11, 17)),
        (Stage.CLOSING, date(2026, 11, 21)),
    ]:
        quiet = cohort.cohort_day(day)  # every day of the cohort so far
        risk = MemberRisk(
            GROUP_A, "wmSilent", "小王", "external", None, stage, 2, fired, quiet, 0, True
        )
        chosen[stage] = suggestion(None, cohort, risk, day, "李老师", (), 0)[0]  # type: ignore[arg-type]
        # Someone who spoke in the first days and then went quiet is not "never spoken".
        spoke = MemberRisk(
            GROUP_A, "wmGone", "小冷", "external", None, stage, 2, fired, quiet - 2, 0, True
        )
        later = suggestion(None, cohort, spoke, day, "李老师", (), 0)[0]  # type: ignore[arg-type]
        assert not later.startswith("never.spoken"), (stage, later)
    assert chosen == {
        Stage.NEWCOMER: "never.spoken",
        Stage.ADVANCING: "never.spoken.late",
        Stage.SPRINT: "never.spoken.late",
        Stage.CLOSING: "never.spoken.late",
    }


def test_an_active_learner_without_an_introduction_is_asked_for_one_in_every_running_stage() -> (
    None
):
    """The demo's point farmer (a 28-day streak, only the introduction missing) was suggested a
    weekend catch-up script ("挑一节之前没看完的内容") on the last day. After the first week the
    introduction ranks after a milestone within reach."""
    from bot.radar import Fired, MemberRisk, Signal
    from handlers.digest import suggestion
    from tests.conftest import GROUP_A

    cohort = parse_settings(base_config(), env={}).cohort("c1")
    chosen = {}
    for stage, day, streak in [
        (Stage.ADAPTING, date(2026, 11, 6), 5),
        (Stage.ADVANCING, date(2026, 11, 14), 10),  # a Saturday: the weekend script comes later
        (Stage.ADVANCING, date(2026, 11, 14), 20),  # the 21-day milestone is a day away
        (Stage.CLOSING, date(2026, 11, 22), 10),  # a Sunday
    ]:
        risk = MemberRisk(
            GROUP_A, "wmBusy", "小葵", "external", None, stage, 1, [Fired(Signal.NO_INTRO, "原因")],
            0, streak, True,
        )  # fmt: skip
        chosen[stage, streak] = suggestion(None, cohort, risk, day, "李老师", (), 0)[0]  # type: ignore[arg-type]
    assert chosen == {
        (Stage.ADAPTING, 5): "intro.missing",
        (Stage.ADVANCING, 10): "intro.late",
        (Stage.ADVANCING, 20): "milestone.near",
        (Stage.CLOSING, 10): "intro.late",
    }


def test_a_milestone_already_earned_is_never_the_one_within_reach() -> None:
    """Five days into a new streak, a learner who already has the 7-day badge is not told the
    7-day milestone is two days away (a badge is earned once); the next one is 14. Under the
    total basis the distance counts check-in days in all."""
    from bot.radar import Fired, MemberRisk, Signal
    from handlers.digest import suggestion
    from handlers.nudges import Standing, values_for
    from tests.conftest import GROUP_A

    cohort = parse_settings(base_config(), env={}).cohort("c1")
    day = date(2026, 11, 16)
    risk = MemberRisk(
        GROUP_A, "wmBack", "小王", "external", None, Stage.SPRINT, 1,
        [Fired(Signal.CHECKIN_DROP, "原因")], 0, 5, True,
    )  # fmt: skip

    def suggest(standing: Standing | None) -> tuple[str, str]:
        return suggestion(None, cohort, risk, day, "李老师", (), 0, standing)  # type: ignore[arg-type]

    def values(standing: Standing) -> tuple[object, object]:
        found = values_for(None, cohort, risk, day, "李老师", 0, standing)  # type: ignore[arg-type]
        return found["next_milestone"], found["days_to_milestone"]

    assert suggest(None)[0] == "milestone.near"  # the streak, no badges
    again = suggest(Standing(5, frozenset({7})))
    assert again[0] != "milestone.near" and "7天" not in again[1]
    assert values(Standing(5, frozenset({7}))) == (14, 9)
    # Total basis: 12 check-in days in all (streak 5), the 7-day badge: 14 is two days away.
    total = suggest(Standing(12, frozenset({7})))
    assert total[0] == "milestone.near" and "14" in total[1]
    assert values(Standing(12, frozenset({7}))) == (14, 2)


def test_scripts_for_a_learner_who_never_spoke_assume_no_participation() -> None:
    """Once the never-spoken variants were used up, 小默 got the sprint's "你前面打下的基础很
    扎实" and "你已经有0积分了": only scripts that assume nothing are left for them."""
    from bot.radar import Signal
    from handlers.nudges import scenarios_of

    signals = frozenset([Signal.SILENCE, Signal.NO_INTRO, Signal.NO_CHECKIN])
    never = scenarios_of(signals, Stage.SPRINT, 2, False, False, False, False, True)
    assert never == ("never_spoken", "long_silence")
    spoke = scenarios_of(signals, Stage.SPRINT, 2, False, False, False, False, False)
    assert spoke[:2] == ("sprint_push", "long_silence") and "missed_checkins" in spoke


def test_no_script_names_a_balance_of_zero() -> None:
    from bot.radar import Fired, MemberRisk, Signal
    from handlers.nudges import values_for
    from tests.conftest import GROUP_A

    cohort = parse_settings(base_config(), env={}).cohort("c1")
    risk = MemberRisk(
        GROUP_A, "wmA", "小默", "external", None, Stage.SPRINT, 2,
        [Fired(Signal.SILENCE, "原因")], 3, 0, True,
    )  # fmt: skip
    day = date(2026, 11, 17)
    assert values_for(None, cohort, risk, day, "李老师", 0)["points"] is None  # type: ignore[arg-type]
    assert values_for(None, cohort, risk, day, "李老师", 12)["points"] == 12  # type: ignore[arg-type]
