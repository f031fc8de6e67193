"""Mentor messages (导师寄语) for learning-evidence cards: the data file and its renderer.

The words live in ``mentor_messages.toml`` (STYLE habit 10: words are data); this module loads
them, refuses a template whose placeholders are not the known named fields, and picks one whose
rendered length is 100-150 characters (seed 001: 导师寄语 100-150字).
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
PLACEHOLDERS = frozenset({"name", "course", "day", "streak", "total", "reviews", "points"})
MIN_CHARS = 100
MAX_CHARS = 150


class TemplateError(ValueError):
    """A template in the library is malformed; the message names the template."""


@dataclass(frozen=True)
class MentorTemplate:
    id: str
    text: str

    @property
    def fields(self) -> frozenset[str]:
        return fields_of(self.text)

    def render(self, values: Mapping[str, object]) -> str:
        """Fill the placeholders; every one must have a value."""
        missing = self.fields - set(values)
        if missing:
            raise TemplateError(f"mentor message {self.id!r}: no value for {sorted(missing)}")
        return self.text.format_map({k: values[k] for k in self.fields})


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
        if not isinstance(item, dict) or set(item) != {"id", "text"}:
            raise TemplateError(f"{source}: messages[{i}] needs exactly `id` and `text`")
        template = MentorTemplate(id=str(item["id"]), text=str(item["text"]))
        if template.id in seen:
            raise TemplateError(f"{source}: id {template.id!r} is used twice")
        seen.add(template.id)
        check_template(template)
        out.append(template)
    return out


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
    """A mentor message for ``values``, stable for the same ``seed`` (e.g. member and day).

    Only messages whose rendered length is within 100-150 characters are candidates; when none
    is (an unusually long name or course), the one closest to the range is used. Messages naming
    a count (reviews, streak, check-ins) that is 0 for this learner are left out.
    """
    library = templates() if library is None else library
    # A message that names a count is only for a learner who has some ("0条点评" is no praise).
    praising = [t for t in library if all(values.get(c) != 0 for c in COUNTED & t.fields)]
    rendered = [t.render(values) for t in (praising or library)]
    fitting = [r for r in rendered if MIN_CHARS <= len(r) <= MAX_CHARS]
    if not fitting:
        return min(rendered, key=lambda r: max(MIN_CHARS - len(r), len(r) - MAX_CHARS))
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return fitting[int.from_bytes(digest[:4], "big") % len(fitting)]
