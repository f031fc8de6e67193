"""Typed @-mentions (``@小明``, ``@Coco Li``) resolved against a group's members.

WeCom passes mentions of people as plain text in archive items and in most callbacks, so the
name after ``@`` is matched against the members' display names and ids. A name may contain
spaces: at each ``@`` the longest known name or id that follows wins, provided it ends at the
end of the text, at whitespace or at punctuation. Shared by the command framework
(``点评 @人 ...``) and the implicit reviews (a message that @-mentions a peer's check-in).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

_AT = re.compile(r"[@＠]")
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Mentions:
    ids: tuple[str, ...]  # member ids, in order of first mention, each once
    unresolved: tuple[str, ...]  # what followed an "@" that names nobody in the group
    rest: str  # the text with every @-mention taken out


def _ends_a_name(text: str, end: int) -> bool:
    if end >= len(text):
        return True
    ch = text[end]
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def resolve(text: str, members: Iterable[tuple[str, str]]) -> Mentions:
    """The ``@name`` mentions of ``text`` among ``members`` (``(member_id, name)`` pairs; on a
    shared name the first pair wins)."""
    by_key: dict[str, str] = {}
    for member_id, name in members:
        if name:
            by_key.setdefault(name, member_id)
        by_key.setdefault(member_id, member_id)
    keys = sorted(by_key, key=len, reverse=True)
    ids: list[str] = []
    unresolved: list[str] = []
    rest: list[str] = []
    pos = 0
    while (found := _AT.search(text, pos)) is not None:
        start = found.end()
        rest.append(text[pos : found.start()])
        key = next(
            (k for k in keys if text.startswith(k, start) and _ends_a_name(text, start + len(k))),
            None,
        )
        if key is not None:
            member_id = by_key[key]
            if member_id not in ids:
                ids.append(member_id)
            pos = start + len(key)
            continue
        token = _TOKEN.match(text, start)
        if token is None:  # a lone "@" at the end or before a space is just a character
            rest.append(found.group())
            pos = start
            continue
        unresolved.append(token.group())
        pos = token.end()
    rest.append(text[pos:])
    return Mentions(tuple(ids), tuple(unresolved), " ".join("".join(rest).split()))
