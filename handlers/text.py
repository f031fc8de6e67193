"""Text measures shared by handlers: meaningful characters (SPEC §2)."""

from __future__ import annotations

import re

# Links, @-mentions and WeChat's text emoji codes such as [微笑] carry no words of the learner's.
_NOISE = re.compile(r"https?://\S+|www\.\S+|@\S+|\[[^\[\]\s]{1,6}\]")
#: A run of this many identical characters or more counts once ("哈哈哈哈", "。。。", "6666").
#: Pairs count fully: reduplication (好好, 慢慢, 天天) is ordinary Chinese.
RUN_COLLAPSE_AT = 3


def meaningful_chars(text: str) -> int:
    """Count the characters that carry content.

    Letters and digits of any script count (CJK ideographs, kana, hangul, Latin); whitespace,
    punctuation, symbols and emoji do not; a run of three or more identical characters counts as
    one; links, @-mentions and bracketed emoji codes are ignored.
    """
    if not text:
        return 0
    text = _NOISE.sub(" ", text)
    count = 0
    prev = ""
    run = 0
    for ch in text:
        if not ch.isalnum():
            continue
        if ch == prev:
            run += 1
            if run < RUN_COLLAPSE_AT:
                count += 1
            elif run == RUN_COLLAPSE_AT:
                count -= RUN_COLLAPSE_AT - 2  # the whole run counts once
            continue
        prev, run = ch, 1
        count += 1
    return count


_URL = re.compile(r"https?://\S+|www\.\S+")


def has_link(text: str) -> bool:
    return bool(_URL.search(text))


_LEADING_MENTIONS = re.compile(r"^(?:\s*@\S+)+\s*")


def strip_leading_mentions(text: str) -> str:
    """``"@小助手 打卡 今天..."`` -> ``"打卡 今天..."``: the @-mentions a message starts with."""
    return _LEADING_MENTIONS.sub("", text)
