"""TF-IDF keywords without jieba.analyse: the same ranking as jieba's, a smaller footprint."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from handlers import keywords
from handlers.keywords import JIEBA_STOP_WORDS, Idf, extract, topics

TEXTS = [
    # a day of a group, as the digest joins it
    "\n".join(
        [
            "#打卡 Day3 今天学了列表推导式，练习都做完了",
            "请问这道题怎么做？缩进报错 IndentationError",
            "列表推导式真好用，比 for 循环简洁多了",
            "第3天打卡：字典和集合，笔记已整理",
            "老师，装饰器什么时候讲？",
            "The list comprehension is the thing I like most, and it is fast",
        ]
    ),
    "今天学习了列表推导式和字典，列表推导式真好用",
    "哈哈哈哈哈 👍👍 收到，谢谢老师",
    "",
    "生成器 yield 生成器 yield 迭代器 迭代器 协程",  # ties: the order of first appearance
]


def _jieba_extractor(stop_path: str | None) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # jieba leaves its files open
        import jieba.analyse

        extractor = jieba.analyse.TFIDF()
        if stop_path is not None:
            extractor.set_stop_words(stop_path)
    return extractor


@pytest.mark.parametrize("text", TEXTS)
def test_the_ranking_is_jiebas(text: str) -> None:
    extractor = _jieba_extractor(None)
    assert extract(text, 18) == extractor.extract_tags(text, topK=18)  # type: ignore[attr-defined]
    assert extract(text, 3) == extractor.extract_tags(text, topK=3)  # type: ignore[attr-defined]


def test_the_ranking_with_stop_words_is_jiebas(tmp_path: object) -> None:
    from pathlib import Path

    stop_file = Path(str(tmp_path)) / "stop.txt"
    stop_file.write_text("今天\n列表\n老师\n", encoding="utf-8")
    extractor = _jieba_extractor(str(stop_file))
    stop = JIEBA_STOP_WORDS | {"今天", "列表", "老师"}
    for text in TEXTS:
        ours = extract(text, 10, stop)
        assert ours == extractor.extract_tags(text, topK=10)  # type: ignore[attr-defined]
        assert not {"今天", "列表", "老师"} & set(ours)


def test_the_table_is_jiebas_and_a_missing_word_gets_the_median() -> None:
    idf = keywords.jieba_idf()
    assert keywords.jieba_idf() is idf  # read once per process
    extractor = _jieba_extractor(None)
    theirs, median = extractor.idf_freq, extractor.median_idf  # type: ignore[attr-defined]
    assert idf.table == theirs
    assert idf.median == median
    assert idf["没有这个词的词表里不会有"] == median


def test_equal_values_are_held_once_and_bad_tables_are_refused() -> None:
    idf = Idf(["甲 2.5", "乙 2.5", "", "丙 7.25", "丁"])
    assert idf.table == {"甲": 2.5, "乙": 2.5, "丙": 7.25}
    assert idf.table["甲"] is idf.table["乙"]
    assert idf["戊"] == 2.5  # the median of 2.5, 2.5, 7.25
    table = Idf(["学习 1.0", "字典 2.0", "列表 9.0"])
    # tf x idf: 学习 twice (2 x 1.0) ranks above 字典 once (2.0, tie: first seen), 列表 first
    assert extract("学习字典，学习列表。的", 5, idf=table) == ["列表", "学习", "字典"]
    with pytest.raises(ValueError, match="at least one"):
        Idf(["", "no-value"])


def test_keywords_do_not_load_jieba_analyse() -> None:
    code = (
        "import sys\n"
        "from handlers.keywords import extract\n"
        "from handlers.rhythm import top_keywords\n"
        "assert extract('今天学习了列表推导式和字典，列表推导式真好用', 3)\n"
        "assert top_keywords(['装饰器比列表推导式难多了，装饰器'], 2)\n"
        "print(sorted(m for m in sys.modules if m.startswith('jieba')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = done.stdout.strip()
    assert "jieba.analyse" not in loaded and "jieba.posseg" not in loaded, loaded
    assert "'jieba'" in loaded


def test_topics_leave_out_check_in_boilerplate_links_mentions_and_chat_words() -> None:
    texts = [
        "#打卡 Day3 今天学了列表推导式，第3天打卡",
        "列表推导式 https://example.com/page @小鱼 [微笑]",
        "装饰器 装饰器 123 D3 day12 第12天",
        "#打卡 Day4 字典",
        "Day 5 打卡",
    ]
    raw = extract("\n".join(texts), 30)
    # Without the filters these would be among the words: the test shows they are left out.
    noise = {"打卡", "Day3", "Day4", "Day", "D3", "day12", "123", "今天", "example", "小鱼", "微笑"}
    assert noise <= set(raw)
    found = topics(texts, 8)
    assert found[:3] == ["推导", "列表", "装饰"] and "字典" in found
    assert not noise & set(found)
    assert topics(["https://example.com", "@小鱼", ""], 5) == []
    # Commands to the bot are not what the group talks about.
    commands = ["/潜水 3", "／批准 12", " /排行 连续"]
    assert {"潜水", "批准", "排行"} <= set(extract("\n".join(commands), 10))
    assert topics(commands, 5) == []
    assert topics([*texts, *commands], 8) == found
    assert topics(texts, 2) == found[:2]
