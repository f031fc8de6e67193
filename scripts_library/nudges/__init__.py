"""The private-nudge scripts (SPEC §8) as data: the TOML files beside this module, a loader,
a safe renderer and the lint behind ``cohortbot scripts lint``.

A script has an id, a scenario, the stages and risk levels it is for, a channel, a format and
three or more text variants with named placeholders. Rendering substitutes ``{name}``-style
fields in one pass: a value (a learner's name is user data) is inserted literally, so a name
like ``{points}`` or ``{0.__class__}`` is never interpreted.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).parent

STAGES = ("newcomer", "adapting", "advancing", "sprint", "closing", "after")
LEVELS = {"light": 1, "medium": 2, "high": 3}
CHANNELS = ("private",)
FORMATS = {"text": 2048, "markdown": 4096}  # WeCom byte limits after rendering

RUNNING = STAGES[:5]
#: Every scenario and the stages it must be covered in.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "long_silence": RUNNING,
    "missed_checkins": RUNNING,
    "broken_streak": STAGES[1:5],
    "checkin_drop": STAGES[1:5],
    "milestone_near": STAGES[1:5],
    "no_intro": RUNNING,
    "never_spoken": RUNNING,
    "volume_drop": STAGES[1:5],
    "low_reviews": ("advancing", "sprint"),
    "late_joiner": ("adapting", "advancing", "sprint"),
    "low_progress": STAGES[1:],
    "homework_missing": STAGES[1:5],
    "after_leave": STAGES[1:5],
    "slump": ("adapting",),
    "sprint_push": ("sprint",),
    "closing_wrapup": ("closing",),
    "reactivation": ("after",),
    "next_cohort": ("after",),
    "high_risk_care": RUNNING,
    "ignored_nudge": RUNNING,
    "weekend_catchup": RUNNING,
    "knowledge_postcard": STAGES,
    "offer": STAGES,
}

#: The known placeholders, each with a deliberately long sample value for the byte-limit lint.
PLACEHOLDERS: dict[str, str] = {
    "name": "欧阳·长长的名字测试学员" * 3,
    "days_quiet": "365",
    "streak": "365",
    "next_milestone": "365",
    "days_to_milestone": "365",
    "points": "999999",
    "course": "Python 21天从入门到精通·第十二期训练营（周末班）",
    "teacher": "班主任·王老师（助教）",
    "stage": "冲刺期",
    "cohort_day": "365",
    "days_left": "365",
    "group": "一班·晚间学习小组",
    "postcard": "知识明信片：" + "这是一段课程精华内容，" * 25,
    "offer": "这是一份阶梯挽回方案的说明，" * 8,
}

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


@dataclass(frozen=True)
class Script:
    id: str
    scenario: str
    stages: tuple[str, ...]
    levels: tuple[int, ...]
    channel: str
    format: str
    variants: tuple[str, ...]
    source: str


def fields(template: str) -> list[str]:
    """The placeholder names a template uses (``{{``/``}}`` are literal braces)."""
    return [m.group(1) for m in _FIELD.finditer(template) if m.group(1) is not None]


@dataclass(frozen=True)
class Template:
    """A variant parsed once: literal text and field names in order (see :func:`compiled`)."""

    #: ``(literal, None)`` pieces and ``(token, name)`` fields (``token`` is ``{name}``).
    pieces: tuple[tuple[str, str | None], ...]
    fields: tuple[str, ...]

    def render(self, values: Mapping[str, object]) -> str:
        """:func:`render` of the template this was parsed from."""
        return "".join(
            [
                text if name is None else (str(values[name]) if name in values else text)
                for text, name in self.pieces
            ]
        )


@cache
def compiled(template: str) -> Template:
    """``template`` parsed into literal text and fields (cached: the library is small and fixed,
    and a nightly pass renders tens of thousands of suggestions)."""
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for m in _FIELD.finditer(template):
        if m.start() > at:
            pieces.append((template[at : m.start()], None))
        token = m.group(0)
        if token == "{{":
            pieces.append(("{", None))
        elif token == "}}":
            pieces.append(("}", None))
        else:
            pieces.append((token, m.group(1)))
        at = m.end()
    if at < len(template):
        pieces.append((template[at:], None))
    return Template(tuple(pieces), tuple(name for _, name in pieces if name is not None))


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill ``{name}`` fields from ``values`` in one pass; values are inserted literally.

    Unknown or missing fields are left as written (the lint makes sure there are none).
    """

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = m.group(1)
        if name in values:
            return str(values[name])
        return token

    return _FIELD.sub(sub, template)


class ScriptError(ValueError):
    pass


def _parse(path: Path) -> list[Script]:
    data = tomllib.loads(path.read_text("utf-8"))
    out = []
    for i, raw in enumerate(data.get("script", [])):
        where = f"{path.name}: script[{i}]"
        try:
            levels = tuple(LEVELS[x] for x in raw["levels"])
            script = Script(
                id=str(raw["id"]),
                scenario=str(raw["scenario"]),
                stages=tuple(raw["stages"]),
                levels=levels,
                channel=str(raw.get("channel", "private")),
                format=str(raw.get("format", "text")),
                variants=tuple(raw["variants"]),
                source=path.name,
            )
        except KeyError as exc:
            raise ScriptError(f"{where}: missing or unknown {exc}") from None
        except TypeError:  # e.g. script = "x", or levels = 3
            raise ScriptError(f"{where}: not a [[script]] table of lists and strings") from None
        out.append(script)
    return out


def load(directory: Path | None = None) -> list[Script]:
    """Every script in ``directory`` (default: the packaged library), in file then file order."""
    directory = directory or HERE
    scripts: list[Script] = []
    for path in sorted(directory.glob("*.toml")):
        scripts.extend(_parse(path))
    return scripts


def load_for_lint(directory: Path | None = None) -> tuple[list[Script], list[str]]:
    """Like :func:`load`, but a file that cannot be read is a problem line, not an exception:
    the scripts of the other files, and one line per bad file (``FILE: TOML 语法错误…``)."""
    directory = directory or HERE
    scripts: list[Script] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            scripts.extend(_parse(path))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path.name}: TOML 语法错误（{exc}）")
        except UnicodeDecodeError:
            problems.append(f"{path.name}: 不是 UTF-8 文本")
        except ScriptError as exc:
            problems.append(str(exc))
    return scripts, problems


@cache
def library() -> tuple[Script, ...]:
    """The packaged scripts (loaded once)."""
    return tuple(load())


def by_id(script_id: str) -> Script | None:
    return next((s for s in library() if s.id == script_id), None)


@cache
def candidates(scenario: str, stage: str, level: int) -> tuple[Script, ...]:
    """Scripts for a scenario in a stage at a risk level (level 0 is treated as light)."""
    level = max(level, 1)
    return tuple(
        s for s in library() if s.scenario == scenario and stage in s.stages and level in s.levels
    )


def lint(scripts: Iterable[Script]) -> list[str]:
    """Every problem in the scripts, one line each (empty when all is well)."""
    problems: list[str] = []
    scripts = list(scripts)
    seen: set[str] = set()
    covered: set[tuple[str, str]] = set()
    for s in scripts:
        where = f"{s.source}: {s.id}"
        if s.id in seen:
            problems.append(f"{where}: id used twice")
        seen.add(s.id)
        if s.scenario not in SCENARIOS:
            problems.append(f"{where}: unknown scenario {s.scenario!r}")
        for stage in s.stages:
            if stage not in STAGES:
                problems.append(f"{where}: unknown stage {stage!r}")
            covered.add((s.scenario, stage))
        if not s.levels:
            problems.append(f"{where}: no risk levels")
        if s.channel not in CHANNELS:
            problems.append(f"{where}: unknown channel {s.channel!r}")
        if s.format not in FORMATS:
            problems.append(f"{where}: unknown format {s.format!r}")
            continue
        if len(s.variants) < 3:
            problems.append(f"{where}: {len(s.variants)} variants, at least 3 needed")
        if len(set(s.variants)) != len(s.variants):
            problems.append(f"{where}: two variants are the same text")
        for v, text in enumerate(s.variants):
            for name in fields(text):
                if name not in PLACEHOLDERS:
                    problems.append(f"{where}: variant {v + 1}: unknown placeholder {{{name}}}")
            if "{" in _FIELD.sub("", text) or "}" in _FIELD.sub("", text):
                problems.append(f"{where}: variant {v + 1}: unbalanced brace")
            size = len(render(text, PLACEHOLDERS).encode("utf-8"))
            limit = FORMATS[s.format]
            if size > limit:
                problems.append(
                    f"{where}: variant {v + 1}: {size} bytes rendered, limit {limit} ({s.format})"
                )
    for scenario, stages in SCENARIOS.items():
        for stage in stages:
            if (scenario, stage) not in covered:
                problems.append(f"coverage: no script for scenario {scenario!r} in stage {stage!r}")
    for stage in STAGES:
        for level_name, level in LEVELS.items():
            if not any(stage in s.stages and level in s.levels for s in scripts):
                problems.append(f"coverage: no script for stage {stage!r} at level {level_name}")
    return problems
