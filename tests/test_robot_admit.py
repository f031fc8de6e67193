"""The robot door's admit reads three fields with one pattern over the document's UTF-8 instead of
parsing the document: it must refuse and key exactly what the full parse does, on every shape of
document and whatever characters it holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from bot.doors import robot
from bot.doors.wire import Admitted, DoorFormatError
from bot.simulate import robot_xml

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def by_full_parse(plaintext: str) -> Admitted:
    """What admit answered before the fast path: the whole document parsed to a dict."""
    root = robot._root(plaintext)
    msgtype, _sender, msgid = robot._identity(root)
    if msgtype == "event":
        update = robot._update(root, NOW)
        return Admitted(update.message_id, update.event_data["name"])
    return Admitted(robot._message_id(msgid))


def outcome(fn: object, plaintext: str) -> tuple[str, object]:
    try:
        return "ok", fn(plaintext)  # type: ignore[operator]
    except DoorFormatError as exc:
        return "refused", str(exc)


LEAVES = ["text", "", "m-1", "<![CDATA[text]]>", "<![CDATA[]]>", "<![CDATA[<MsgId>x</MsgId>]]>"]
# Characters the UTF-8 pattern must treat as the text's pattern does: Chinese, the fullwidth yen
# (whose UTF-8 starts like U+FFFE's), the two noncharacters XML forbids, controls and CR.
LEAVES += [
    "第一条",
    "<![CDATA[打卡￥5]]>",
    "a\ufffeb",
    "<![CDATA[\uffff]]>",
    "a\x01",
    "a\rb",
    "<![CDATA[\r]]>",
]
# CDATA with markup in it: "<" stays on the fast path, "<!" (a DTD, or not) goes to the full parse.
LEAVES += ["<![CDATA[a<b]]>", "<![CDATA[<!DOCTYPE x>]]>", "<![CDATA[<!-- x -->]]>"]
NAMES = ["MsgType", "MsgId", "From", "UserId", "ChatId", "Text", "Content", "Name"]


def element(rng: random.Random, depth: int = 0) -> str:
    name = rng.choice(NAMES)
    if depth == 0 and rng.random() < 0.35:
        children = "".join(
            rng.choice(["", "\n  "]) + element(rng, 1) for _ in range(rng.randint(1, 3))
        )
        return f"<{name}>{children}{rng.choice(['', chr(10)])}</{name}>"
    return f"<{name}>{rng.choice(LEAVES)}</{name}>"


def documents() -> list[str]:
    rng = random.Random(20261129)
    docs = [
        robot_xml("wrG", "wmU", "第1条 #打卡 Day3", "m1"),
        robot_xml("wrG", "wmU", "提到 <MsgId>x</MsgId> 的消息", "m2"),  # a tag inside CDATA
        robot_xml("wrG", "", "没有发送者", "m3"),
        robot_xml("wrG", "wmU", "没有 id", ""),
        "<xml><MsgType>text</MsgType><From><UserId>u</UserId></From></xml>",  # no MsgId
        "<xml><MsgType>text</MsgType><From>u</From><MsgId>1</MsgId></xml>",  # From is a leaf
        "<xml><MsgType>text</MsgType><UserId>u</UserId><MsgId>1</MsgId></xml>",  # not in From
        "<xml><MsgType>text</MsgType><From><UserId>u</UserId></From><MsgId>1</MsgId>"
        "<MsgId>2</MsgId></xml>",  # repeated: a list, no id
        "<xml><MsgType>text</MsgType><From><UserId>u</UserId></From>"
        "<Text><MsgId>1</MsgId></Text></xml>",  # nested deeper: not the root's
        "<xml><MsgType><A>text</A></MsgType><From><UserId>u</UserId></From><MsgId>1</MsgId></xml>",
        '<xml><MsgType a="1">text</MsgType><From><UserId>u</UserId></From>'
        "<MsgId>1</MsgId></xml>",  # not the plain shape: ElementTree
        "<xml><!-- c --><MsgType>text</MsgType><From><UserId>u</UserId></From>"
        "<MsgId>1</MsgId></xml>",
        "<xml><MsgType>text</MsgType><From><UserId>u</UserId></From><MsgId>1</MsgId>"
        "<Text><Content><![CDATA[<!ENTITY x>]]></Content></Text></xml>",  # a DTD word
        "<xml><MsgType>event</MsgType><From><UserId>u</UserId></From></xml>",
        "<xml><MsgType>text</MsgType><From><UserId>u</UserId></From><MsgId>1</MsgId>",
        "not xml at all",
        "",
    ]
    for _ in range(600):
        parts = [element(rng) for _ in range(rng.randint(0, 7))]
        if rng.random() < 0.7:  # mostly documents that could pass, in random orders
            parts += ["<MsgType>text</MsgType>", "<From><UserId>u</UserId></From>"]
            parts.append(f"<MsgId>{rng.choice(['m9', '', '<![CDATA[m8]]>'])}</MsgId>")
            rng.shuffle(parts)
        separator = rng.choice(["", "\n", " \t"])
        docs.append("<xml>" + separator.join(parts) + separator + "</xml>")
    return docs


def test_admit_answers_as_the_full_parse() -> None:
    docs = documents()
    differ = [
        d
        for d in docs
        if outcome(lambda p: robot.admit(p, p.encode(), NOW), d) != outcome(by_full_parse, d)
    ]
    assert differ == []
    # The generated documents exercise both paths, not only the fallback.
    fast = sum(1 for d in docs if _reads_fast(d))
    assert 50 < fast < len(docs) - 50


def _reads_fast(plaintext: str) -> bool:
    try:
        return robot._key_fields(plaintext.encode()) is not None
    except DoorFormatError:
        return False


def test_the_fast_path_reads_the_usual_callback() -> None:
    """The usual message is read by the pattern, not handed to the full parse."""
    plaintext = robot_xml("wrG", "wmU", "第1条 #打卡 Day3", "m1")
    assert robot._key_fields(plaintext.encode()) == ("text", "wmU", "m1")
    assert robot.admit(plaintext, plaintext.encode(), NOW) == Admitted("m1")
