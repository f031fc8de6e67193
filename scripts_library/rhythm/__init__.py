"""The words of the group's rhythm (SPEC §6): topics, games, welcome and post texts, stop words.

Data files next to this module; :func:`text` renders a named text with named fields and fails
loudly on a missing or unknown field, so a typo is caught by the test that renders every text.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
STOPWORDS_PATH = HERE / "stopwords.txt"


@dataclass(frozen=True)
class Topic:
    id: str
    text: str


@dataclass(frozen=True)
class Riddle:
    id: str
    kind: str  # riddle (脑筋急转弯), quiz (你问我答), guess (猜词)
    question: str
    answers: tuple[str, ...]


@cache
def _load(name: str) -> dict[str, Any]:
    with (HERE / name).open("rb") as f:
        return tomllib.load(f)


@cache
def topics() -> tuple[Topic, ...]:
    """The daily topic pool."""
    return tuple(Topic(str(t["id"]), str(t["text"])) for t in _load("topics.toml")["topic"])


@cache
def riddles() -> tuple[Riddle, ...]:
    """Every game item (riddles, quizzes, word guesses)."""
    return tuple(
        Riddle(str(r["id"]), str(r["kind"]), str(r["question"]), tuple(map(str, r["answers"])))
        for r in _load("riddles.toml")["riddle"]
    )


def game_order() -> list[str]:
    """The game kinds, in the order the daily game cycles through them."""
    return [str(k) for k in _load("games.toml")["games"]["order"]]


def game_title(kind: str) -> str:
    """The game's name as learners know it (脑筋急转弯, 你问我答, 猜词)."""
    return str(_load("games.toml")["games"]["titles"][kind])


def names() -> dict[str, str]:
    """Every named text (posts and welcome) by name."""
    out = {str(k): str(v) for k, v in _load("posts.toml").items()}
    out.update({str(k): str(v) for k, v in _load("welcome.toml").items()})
    return out


def fields_of(template: str) -> set[str]:
    """The ``{field}`` names a template uses."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def text(name: str, /, **fields: object) -> str:
    """Render the named text; every field it uses must be given and every given field used."""
    template = names()[name]
    wanted = fields_of(template)
    if wanted != set(fields):
        raise KeyError(f"text {name!r} uses {sorted(wanted)}, given {sorted(fields)}")
    return template.format(**fields)


@cache
def stopwords() -> frozenset[str]:
    """The stop words of :data:`STOPWORDS_PATH`."""
    lines = STOPWORDS_PATH.read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip() for w in lines if w.strip())
