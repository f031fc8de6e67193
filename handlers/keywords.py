"""TF-IDF keywords of a text: the discussion recap and the digest's hot topics (SPEC §6, §10).

:func:`topics` is what both show: the words of a group's messages, without chat stop words
(``scripts_library/rhythm/stopwords.txt``), links, @-mentions, emoji codes, numbers and the
check-in boilerplate every 打卡 message repeats (打卡, Day3, 第3天).

The ranking is jieba's ``TFIDF.extract_tags`` (jieba 0.42), on jieba's tokenizer and jieba's
IDF table, without importing ``jieba.analyse``. That import loads ``jieba.posseg``'s tagging
tables for its TextRank extractor, which nothing here uses, and every ``TFIDF()`` reads its own
copy of the IDF table (a 6 MB file, read whole and split in memory). Here the table is read once
per process, a line at a time, with each of its 3,328 distinct values held once. Measured in a
process that had loaded jieba's dictionary (158 MB resident): ``jieba.analyse`` for the digest
took it to 255 MB and the recap's second extractor to 293 MB; this module's table to 193 MB,
read in 0.18 s instead of 0.59 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import jieba

from scripts_library import rhythm as words

#: jieba's own stop words (``KeywordExtractor.STOP_WORDS``), which its default extractor uses.
JIEBA_STOP_WORDS = frozenset(
    (
        "the", "of", "is", "and", "to", "in", "that", "we", "for", "an", "are",
        "by", "be", "as", "on", "with", "can", "if", "from", "which", "you", "it",
        "this", "then", "at", "have", "all", "not", "one", "has", "or",
    )
)  # fmt: skip

IDF_PATH = Path(jieba.__file__).with_name("analyse") / "idf.txt"


class Idf:
    """Inverse document frequencies by word, and the median for a word the table lacks."""

    def __init__(self, lines: Iterable[str]) -> None:
        values: dict[str, float] = {}  # one float object per distinct value
        table: dict[str, float] = {}
        for line in lines:
            word, _, value = line.strip().partition(" ")
            if not word or not value:
                continue
            number = values.get(value)
            if number is None:
                number = values[value] = float(value)
            table[word] = number
        if not table:
            raise ValueError("an IDF table needs at least one 'word value' line")
        self.table = table
        self.median = sorted(table.values())[len(table) // 2]

    def __getitem__(self, word: str) -> float:
        return self.table.get(word, self.median)


@cache
def jieba_idf() -> Idf:
    """jieba's IDF table, read on first use (about a quarter of a second)."""
    with IDF_PATH.open(encoding="utf-8") as lines:
        return Idf(lines)


def extract(
    text: str, top: int, stop_words: frozenset[str] = JIEBA_STOP_WORDS, idf: Idf | None = None
) -> list[str]:
    """The ``top`` words of ``text`` by term frequency times IDF, best first.

    As jieba's ``extract_tags``: a token shorter than two characters (after stripping) or whose
    lower case is a stop word is skipped; ties keep the order of first appearance.
    """
    table = idf or jieba_idf()
    freq: dict[str, float] = {}
    for word in jieba.cut(text):
        if len(word.strip()) < 2 or word.lower() in stop_words:
            continue
        freq[word] = freq.get(word, 0.0) + 1.0
    total = sum(freq.values())
    for word in freq:
        freq[word] *= table[word] / total
    return sorted(freq, key=freq.__getitem__, reverse=True)[:top]


#: Removed from messages before they are tokenized: links, @-mentions, emoji codes like [微笑].
_NOISE = re.compile(r"https?://\S+|www\.\S+|@\S+|\[[^\[\]\s]{1,6}\]")
#: Tokens that only number a day or a check-in: 12, Day3, D3, Day (of "Day 3"), 第3天.
_COUNTING = re.compile(r"(?i)day|(?:day|d)?\d+|第\d+天")


@cache
def chat_stop_words() -> frozenset[str]:
    """jieba's stop words and the chat stop words of ``scripts_library/rhythm/stopwords.txt``."""
    return JIEBA_STOP_WORDS | words.stopwords()


#: How a command to the bot starts in a group (see ``handlers.commands``).
_COMMAND = ("/", "／")


def topics(texts: Sequence[str], top: int) -> list[str]:
    """The ``top`` words that characterize a group's messages, best first. Commands to the bot
    (``/潜水``, ``/批准 3``) are not the group's topics."""
    joined = "\n".join(
        _NOISE.sub(" ", t) for t in texts if t and not t.lstrip().startswith(_COMMAND)
    )
    if not joined.strip():
        return []
    found = extract(joined, top * 3, chat_stop_words())
    return [w for w in found if "打卡" not in w and not _COUNTING.fullmatch(w)][:top]
