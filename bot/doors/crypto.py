"""Callback crypto for every WeCom callback door (PROTOCOL.md §2, path/90968 "加解密方案说明").

A thin shell over ``wechatpy.enterprise.crypto.WeChatCrypto`` that turns every way a request can
be wrong into a :class:`CallbackRejectedError` carrying the HTTP status to answer, so the routes
never answer 500 to bad input. It also owns safe XML parsing (no DTDs, no entities) and the
encrypting side used by ``cohortbot simulate``, the tests and the benchmark.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.exceptions import InvalidSignatureException


class CallbackRejectedError(Exception):
    """A request the door refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# A DTD is how entity bombs and external entities get in; WeCom never sends one. The text
# version finds exactly what the bytes one finds in the encoded text (ASCII rules for \s and
# case), without encoding it first.
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_DTD_TEXT = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE | re.ASCII)

# The plain shape WeCom's callback documents have: an <xml> root whose children are leaves
# (one CDATA section, or text without markup, references or CRs) or hold such leaves. Nothing
# in that shape is read differently by an XML parser (no entities, no end-of-line or attribute
# normalisation, no characters XML forbids), so :func:`parse_xml` reads it with regular
# expressions; anything else, including any DTD, goes to ElementTree.
#
# Characters a leaf may not hold: those XML forbids, and CR. The ASCII ones are all a pattern
# over UTF-8 bytes needs to name: a surrogate cannot be in UTF-8 that Python encoded, and
# U+FFFE/U+FFFF (``NONCHARACTERS_UTF8``) are looked for apart from such a pattern.
FORBIDDEN_ASCII = "\x00-\x08\x0b\x0c\x0e-\x1f\r"
_FORBIDDEN = FORBIDDEN_ASCII + "\ud800-\udfff\ufffe\uffff"
#: U+FFFE or U+FFFF in UTF-8. A pattern, not two ``in`` tests: on Chinese UTF-8, where most
#: bytes are 0x80 or more, ``bytes.__contains__`` for these needles scans byte by byte (0.9 µs
#: for a 400-byte callback against 0.2 µs).
NONCHARACTERS_UTF8 = re.compile(rb"\xef\xbf[\xbe\xbf]")


def _leaf_patterns(forbidden: str) -> tuple[str, str, str]:
    """The plain shape's CDATA body, text body and leaf (capturing either body) patterns."""
    cdata = rf"[^\]{forbidden}]*+(?:\](?!\]>)[^\]{forbidden}]*+)*+"
    text = rf"[^<&\]{forbidden}]*+"
    return cdata, text, rf"(?:<!\[CDATA\[({cdata})\]\]>|({text}))"


_LEAF = _leaf_patterns(_FORBIDDEN)[2]
#: The plain shape's text body as a pattern over UTF-8 (encode it to compile a bytes pattern),
#: for a pattern that reads a few fields of the shape (robot.admit). Its classes are ASCII and
#: every other character's bytes are 0x80 or more, so such a pattern matches the UTF-8 of a text
#: exactly when its ``str`` twin matches the text, for a text without U+FFFE or U+FFFF.
UTF8_TEXT_BODY = _leaf_patterns(FORBIDDEN_ASCII)[1]
NAME = _NAME = r"[A-Za-z_][A-Za-z0-9_.\-]*+"
WS = _WS = r"[ \t\n]*+"
# One pass checks that the whole document has the plain shape (elements holding a leaf, or
# holding elements that hold a leaf, with matching closing tags); a second lists its leaves and
# tags in order. The second runs on a document the first accepted, so its leaf patterns only
# need to find where each leaf ends, which single-character classes do fast.
_SHAPE = re.compile(
    rf"(?:{_WS}<({_NAME})>(?:{_LEAF}|(?:{_WS}<({_NAME})>{_LEAF}</\4>)++{_WS})</\1>)*+{_WS}"
)
_TOKEN = re.compile(
    rf"<({_NAME})>(?:<!\[CDATA\[([^\]]*+(?:\](?!\]>)[^\]]*+)*+)\]\]>|([^<]*+))</\1>"
    rf"|<({_NAME})>|</{_NAME}>"
)


def parse_xml(data: str | bytes) -> dict[str, Any]:
    """Parse a callback XML document into a dict of the ``<xml>`` root's children (text for
    leaves, dicts for nested elements, lists for repeated tags).

    Documents with a DOCTYPE or ENTITY declaration are refused before the parser sees them, so
    no entity can be defined, let alone expanded (wechatpy would hand the body to xmltodict; it
    gets the already parsed ``Encrypt`` instead). Raises :class:`CallbackRejectedError` (400).
    Documents of WeCom's plain shape take a fast path that gives the same dict (every callback
    parses its envelope and its payload before the answer).
    """
    if isinstance(data, str):
        _refuse_dtd(data)
        fast = _plain_shape(data) if data.startswith("<xml>") else None
        if fast is not None:
            return fast
        raw = data.encode("utf-8")
    else:
        raw = data
        _refuse_dtd(raw)
        if raw.startswith(b"<xml>"):
            try:
                fast = _plain_shape(raw.decode("utf-8"))
            except UnicodeDecodeError:
                fast = None  # ElementTree says what is wrong
            if fast is not None:
                return fast
    try:
        root = ElementTree.fromstring(raw)
    except (ElementTree.ParseError, ValueError, LookupError) as exc:
        raise CallbackRejectedError(400, f"malformed XML ({exc})") from None
    if root.tag != "xml":
        raise CallbackRejectedError(400, "XML without an <xml> root")
    tree = _element(root)
    return tree if isinstance(tree, dict) else {}


def _refuse_dtd(document: str | bytes) -> None:
    """:func:`parse_xml`'s first check: 400 for a DTD or entity declaration anywhere in
    ``document`` (a text, or its UTF-8: the two patterns find the same)."""
    found = _DTD_TEXT.search(document) if isinstance(document, str) else _DTD.search(document)
    if found:
        raise CallbackRejectedError(400, "XML with a DTD or entity declaration")


def _plain_shape(text: str) -> dict[str, Any] | None:
    """:func:`parse_xml`'s answer for a document of the plain shape, else None."""
    end = len(text) - 6
    if end < 5 or not text.endswith("</xml>") or _SHAPE.fullmatch(text, 5, end) is None:
        return None
    out: dict[str, Any] = {}
    current = out
    # Each token is a leaf (its name, and its CDATA or its text: the other one is ""), an
    # opening tag or a closing one; the shape check means they nest one level at most.
    for leaf, cdata, plain, opened in _TOKEN.findall(text, 5, end):
        if leaf:
            _add(current, leaf, cdata or plain)
        elif opened:
            current = {}
            _add(out, opened, current)
        else:
            current = out
    return out


def _add(out: dict[str, Any], tag: str, value: Any) -> None:
    if tag not in out:
        out[tag] = value
    elif isinstance(out[tag], list):
        out[tag].append(value)
    else:
        out[tag] = [out[tag], value]


def _element(element: ElementTree.Element) -> Any:
    children = list(element)
    if not children:
        return element.text or ""
    out: dict[str, Any] = {}
    for child in children:
        _add(out, child.tag, _element(child))
    return out


class DoorCrypto:
    """Verify and decrypt one door's callbacks; ``receive_id`` is ``""`` for AI bots and robots
    (WeCom encrypts their payloads with an empty ReceiveId) and the CorpID for apps."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        try:
            self._crypto = WeChatCrypto(token, encoding_aes_key, receive_id)
        except (AssertionError, binascii.Error, ValueError):
            raise ValueError("EncodingAESKey must be 43 base64 characters") from None
        self.token = token
        self.receive_id = receive_id

    def verify_url(self, signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """The GET URL check: the decrypted echostr, which is all the answer may contain."""
        try:
            return str(self._crypto.check_signature(signature, timestamp, nonce, echostr))
        except InvalidSignatureException:
            raise CallbackRejectedError(403, "wrong signature") from None
        except InvalidCorpIdException:
            raise CallbackRejectedError(403, "encrypted for another receiver") from None
        except Exception as exc:  # garbage base64, wrong key: decrypting yields noise
            raise CallbackRejectedError(
                400, f"cannot decrypt echostr ({type(exc).__name__})"
            ) from None

    def decrypt(self, encrypted: str, signature: str, timestamp: str, nonce: str) -> str:
        """Check the signature over ``encrypted`` and return its plaintext."""
        try:
            return str(
                self._crypto.decrypt_message({"Encrypt": encrypted}, signature, timestamp, nonce)
            )
        except InvalidSignatureException:
            raise CallbackRejectedError(403, "wrong signature") from None
        except InvalidCorpIdException:
            raise CallbackRejectedError(403, "encrypted for another receiver") from None
        except Exception as exc:
            raise CallbackRejectedError(400, f"cannot decrypt ({type(exc).__name__})") from None

    def encrypt(self, plaintext: str) -> str:
        """Encrypt ``plaintext`` for this door (the sending side: simulate, tests, bench)."""
        return PrpCrypto(self._crypto.key).encrypt(plaintext, self.receive_id).decode()

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self.token, timestamp, nonce, encrypted)


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """``msg_signature = sha1(sorted(token, timestamp, nonce, encrypted))`` (PROTOCOL.md §2)."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


def encrypted_xml_body(encrypted: str, to_user: str = "", agent_id: str = "") -> str:
    """The XML envelope robots and apps POST."""
    return (
        f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypted}]]></Encrypt>"
        f"<AgentID><![CDATA[{agent_id}]]></AgentID></xml>"
    )


def signed_request(
    crypto: DoorCrypto, plaintext: str, timestamp: int, json_body: bool
) -> tuple[dict[str, str], str]:
    """Query parameters and body of a genuine callback carrying ``plaintext``."""
    encrypted = crypto.encrypt(plaintext)
    nonce = str(secrets.randbelow(10**10))
    ts = str(timestamp)
    params = {"msg_signature": crypto.sign(ts, nonce, encrypted), "timestamp": ts, "nonce": nonce}
    body = json.dumps({"encrypt": encrypted}) if json_body else encrypted_xml_body(encrypted)
    return params, body


def envelope_encrypt(body: Mapping[str, Any] | None) -> str | None:
    """The ``encrypt`` field of an AI-bot JSON body, or None when the shape is wrong."""
    if not isinstance(body, Mapping):
        return None
    value = body.get("encrypt")
    return value if isinstance(value, str) and value else None
