"""``parse_xml``'s fast path for WeCom's plain documents gives exactly what ElementTree gives.

Every callback's envelope and payload are parsed before the answer, so plain documents (leaves
of CDATA or markup-free text, one level of nesting) are read with a regular expression; these
tests hold it to the ElementTree reading on WeCom's shapes, on edge cases, and on random
documents, including what must still be refused.
"""

from __future__ import annotations

import random
from typing import Any
from xml.etree import ElementTree

import pytest

from bot.doors import crypto
from bot.doors.crypto import CallbackRejectedError, encrypted_xml_body, parse_xml
from bot.simulate import app_text_xml, robot_xml


def reference(doc: str | bytes) -> dict[str, Any] | None:
    """ElementTree's reading (None where it refuses), as parse_xml had it before the fast path."""
    raw = doc.encode() if isinstance(doc, str) else doc
    if crypto._DTD.search(raw):
        return None
    try:
        root = ElementTree.fromstring(raw)
    except (ElementTree.ParseError, ValueError, LookupError):
        return None
    if root.tag != "xml":
        return None
    tree = crypto._element(root)
    return tree if isinstance(tree, dict) else {}


def same_as_reference(doc: str | bytes) -> None:
    expected = reference(doc)
    if expected is None:
        with pytest.raises(CallbackRejectedError):
            parse_xml(doc)
    else:
        assert parse_xml(doc) == expected, doc


EDGE_CASES = [
    robot_xml("wrG", "wmU1", "第1条 [微笑] a]b ]] x]]y #打卡 Day3", "m1"),
    app_text_xml("wwCORP", "u1", "打卡 <b> & 'q'", "m2", 1700000000),
    encrypted_xml_body("QUJD+/=="),
    "<xml></xml>",
    "<xml> \n\t </xml>",
    "<xml><A></A><B><![CDATA[]]></B></xml>",
    "<xml>\n  <A>1</A>\n  <B>\n    <C>2</C>\n    <C>3</C>\n  </B>\n</xml>",
    "<xml><A>1</A><A>2</A><A>3</A></xml>",
    "<xml><A> spaced </A><B>tab\there\nline</B><C>a > b</C></xml>",
    "<xml><A><![CDATA[<xml></xml> &amp; <!-- no -->]]></A></xml>",
    "<xml><A><![CDATA[ends with ]]]></A><B><![CDATA[]]]]></B></xml>",
    "<xml><From><UserId>u</UserId><Name></Name></From><From><UserId>v</UserId></From></xml>",
    "<xml><M><I><T><C>deep</C></T></I></M></xml>",  # deeper than the fast path goes
    "<xml>text<A>1</A></xml>",
    "<xml><A>1</A>tail</xml>",
    "<xml><A>1<B>2</B></A></xml>",
    '<xml><A x="1">1</A></xml>',
    '<xml a="1"><A>1</A></xml>',
    "<xml><A/></xml>",
    "<xml><A>a &amp; b</A></xml>",
    "<xml><A>a &#20013; b</A></xml>",
    "<xml><A>line\r\nbreak</A></xml>",
    "<xml><A><![CDATA[cr\r\nlf]]></A></xml>",
    "<xml><A>x\x01y</A></xml>",
    "<xml><A>x]]>y</A></xml>",
    "<xml><A>1</B></xml>",
    "<xml><A>1</A>",
    "<xml><A>1</A></xml></xml>",
    "<xml><!-- c --><A>1</A></xml>",
    "<xml><?pi x?><A>1</A></xml>",
    "<xml><ns:A>1</ns:A></xml>",
    "<xml><中>1</中></xml>",
    "<xml><A><![CDATA[<!DOCTYPE x>]]></A></xml>",
    '<?xml version="1.0"?><xml><A>1</A></xml>',
    " <xml><A>1</A></xml>",
    "<xml><A>1</A></xml> ",
    "<root><A>1</A></root>",
    "<xml>",
    "",
]


@pytest.mark.parametrize("doc", EDGE_CASES)
def test_edge_cases_read_as_elementtree_reads_them(doc: str) -> None:
    same_as_reference(doc)
    same_as_reference(doc.encode())


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(CallbackRejectedError):
        parse_xml(b"<xml><A>\xff\xfe</A></xml>")


def test_random_documents_read_as_elementtree_reads_them() -> None:
    rng = random.Random(20261123)
    atoms = ["a", "中", " ", "\n", "\t", "]", "]]", ">", "<", "&", "\r", "\x01", "x]]>y"]

    def text() -> str:
        return "".join(rng.choice(atoms) for _ in range(rng.randint(0, 4)))

    def leaf() -> str:
        return f"<![CDATA[{text()}]]>" if rng.random() < 0.5 else text()

    def element(depth: int) -> str:
        name = rng.choice(["A", "B", "MsgId", "x.y", "_z"])
        if depth < 3 and rng.random() < 0.4:
            inner = "".join(element(depth + 1) for _ in range(rng.randint(1, 3)))
            return f"<{name}>{rng.choice(['', ' ', chr(10)])}{inner}</{name}>"
        return f"<{name}>{leaf()}</{name}>"

    for _ in range(3000):
        body = "".join(element(1) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(0, 5)))
        same_as_reference(f"<xml>{body}</xml>")
