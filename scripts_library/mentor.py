"""Mentor messages (导师寄语) for learning-evidence cards: the data file and its renderer.

The words live in ``mentor_messages.toml`` (STYLE habit 10: words are data); this module loads
them, refuses a template whose placeholders are not the known named fields, and picks one that
fits the learner (the cohort's stage: before its first day, during it, after its last; its
``min_*``/``max_*`` conditions, e.g. ``max_day = 3`` for a first-days message) and whose rendered
length is 100-150 characters (seed 001: 导师寄语 100-150字).
"""

from __future__ import annotations

import hashlib
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_FILE = Path(__file__).with_name("mentor_messages.toml")

#: The named fields a mentor message may use.
PLACEHOLDERS = frozenset(
    {"name", "course", "day", "days_left", "streak", "total", "reviews", "points"}
)
#: The numbers a template's conditions may bound: ``min_streak = 3``, ``max_day = 3`` ...
NUMBERS = frozenset({"day", "days_left", "streak", "total", "reviews", "points"})
MIN_CHARS = 100
MAX_CHARS = 150
#: Where the cohort is: a message is for one stage (``stage = "after"``; none said: "during").
STAGES = ("before", "during", "after")
#: Numbers that only mean something during the cohort ({day} would be 第0天 before the start and
#: 第22天 after the end of 21, {days_left} 0 after it): a "before"/"after" message names neither.
DURING_ONLY = frozenset({"day", "days_left"})


class TemplateError(ValueError):
    """A template in the library is malformed; the message names the template."""


@dataclass(frozen=True)
class MentorTemplate:
    id: str
    text: str
    #: ``(number, lowest, highest)`` bounds the learner's values must be within (inclusive).
    conditions: tuple[tuple[str, int | None, int | None], ...] = ()
    #: The stage of the cohort the message is for (one of :data:`STAGES`).
    stage: str = "during"

    @property
    def fields(self) -> frozenset[str]:
        return fields_of(self.text)

    def fits(self, values: Mapping[str, object]) -> bool:
        """True when ``values`` are in the message's stage (:func:`stage_of`) and every condition
        holds for them (a number not given fails)."""
        if stage_of(values) != self.stage:
            return False
        for name, low, high in self.conditions:
            value = values.get(name)
            if not isinstance(value, int):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return True

    def render(self, values: Mapping[str, object]) -> str:
        """Fill the placeholders; every one must have a value."""
        missing = self.fields - set(values)
        if missing:
            raise TemplateError(f"mentor message {self.id!r}: no value for {sorted(missing)}")
        return self.text.format_map({k: values[k] for k in self.fields})


def stage_of(values: Mapping[str, object]) -> str:
    """The cohort's stage for ``values``: "before" when ``day`` (the cohort day, 0 or less before
    the first, as :meth:`CohortSettings.cohort_day <bot.config.CohortSettings.cohort_day>`) is
    below 1, "after" when ``days_left`` is 0 (``CohortSettings.days_left``: after the last day),
    else "during" (also when they are not given)."""
    day, days_left = values.get("day"), values.get("days_left")
    if isinstance(day, int) and day < 1:
        return "before"
    if isinstance(days_left, int) and days_left <= 0:
        return "after"
    return "during"


def fields_of(text: str) -> frozenset[str]:
    """The named placeholders of ``text``; positional, indexed or formatted ones are refused."""
    out: set[str] = set()
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"placeholder {{{name}}} must be a plain named field")
        out.add(name)
    return frozenset(out)


def check_template(template: MentorTemplate) -> None:
    """Raise :class:`TemplateError` when ``template`` uses an unknown placeholder."""
    try:
        unknown = template.fields - PLACEHOLDERS
    except (TemplateError, ValueError) as exc:
        raise TemplateError(f"mentor message {template.id!r}: {exc}") from None
    if unknown:
        raise TemplateError(
            f"mentor message {template.id!r}: unknown placeholder(s) {sorted(unknown)}; "
            f"known: {sorted(PLACEHOLDERS)}"
        )
    if template.stage not in STAGES:
        raise TemplateError(
            f"mentor message {template.id!r}: stage {template.stage!r} is not one of {STAGES}"
        )
    outside = template.fields & DURING_ONLY if template.stage != "during" else frozenset()
    if outside:
        raise TemplateError(
            f"mentor message {template.id!r}: a {template.stage!r} message cannot name "
            f"{sorted(outside)} (they count the cohort's days: only a 'during' message may)"
        )


def parse_templates(
    data: Mapping[str, object], source: str = "mentor messages"
) -> list[MentorTemplate]:
    """Validate a parsed data file into templates (each checked)."""
    items = data.get("messages")
    if not isinstance(items, list) or not items:
        raise TemplateError(f"{source}: expected a non-empty [[messages]] list")
    out: list[MentorTemplate] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not {"id", "text"} <= set(item):
            raise TemplateError(f"{source}: messages[{i}] needs `id` and `text`")
        stage = item.get("stage", "during")
        if not isinstance(stage, str):
            raise TemplateError(f"{source}: messages[{i}]: stage must be one of {STAGES}")
        template = MentorTemplate(
            id=str(item["id"]),
            text=str(item["text"]),
            conditions=_conditions(item, f"{source}: messages[{i}]"),
            stage=stage,
        )
        if template.id in seen:
            raise TemplateError(f"{source}: id {template.id!r} is used twice")
        seen.add(template.id)
        check_template(template)
        out.append(template)
    return out


def _conditions(
    item: Mapping[str, object], where: str
) -> tuple[tuple[str, int | None, int | None], ...]:
    bounds: dict[str, list[int | None]] = {}
    for key, value in item.items():
        if key in ("id", "text", "stage"):
            continue
        side, _, name = key.partition("_")
        if side not in ("min", "max") or name not in NUMBERS:
            raise TemplateError(
                f"{where}: unknown key {key!r} (conditions are min_/max_ + one of "
                f"{sorted(NUMBERS)})"
            )
        if not isinstance(value, int) or isinstance(value, bool):
            raise TemplateError(f"{where}: {key} must be a whole number")
        bounds.setdefault(name, [None, None])[0 if side == "min" else 1] = value
    return tuple((name, low, high) for name, (low, high) in sorted(bounds.items()))


@cache
def templates() -> tuple[MentorTemplate, ...]:
    """The library's mentor messages, loaded and checked once."""
    with DATA_FILE.open("rb") as f:
        return tuple(parse_templates(tomllib.load(f), DATA_FILE.name))


#: Placeholders that count something the message praises.
COUNTED = frozenset({"reviews", "streak", "total"})


def choose(
    values: Mapping[str, object], seed: str, library: Sequence[MentorTemplate] | None = None
) -> str:
    """A mentor message for ``values``, stable for the same ``seed`` (e.g. member and day):
    :func:`choose_template`'s, rendered."""
    return choose_template(values, seed, library).render(values)


def choose_template(
    values: Mapping[str, object], seed: str, library: Sequence[MentorTemplate] | None = None
) -> MentorTemplate:
    """The mentor message for ``values``, stable for the same ``seed``.

    Candidates are the messages of the cohort's stage whose conditions fit the learner (no
    first-days welcome on day 28, no "come back" for a learner on a 17-day streak, nothing but a
    look back after the end) and that name no count that is 0 for them ("0条点评" is no praise);
    when none is, the stage's messages, then any. Of those, one whose rendered length is within
    100-150 characters; when none is (an unusually long name or course), the one closest to it.
    """
    library = templates() if library is None else library
    fitting_situation = [
        t for t in library if t.fits(values) and all(values.get(c) != 0 for c in COUNTED & t.fields)
    ]
    stage = stage_of(values)
    candidates = fitting_situation or [t for t in library if t.stage == stage] or list(library)
    lengths = [len(t.render(values)) for t in candidates]
    fitting = [t for t, n in zip(candidates, lengths, strict=True) if MIN_CHARS <= n <= MAX_CHARS]
    if not fitting:
        distance = [max(MIN_CHARS - n, n - MAX_CHARS) for n in lengths]
        return candidates[distance.index(min(distance))]
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return fitting[int.from_bytes(digest[:4], "big") % len(fitting)]
