"""What the callback doors share: the stored form of a decrypted callback, format errors, and
small helpers for turning WeCom's loosely typed fields into an :class:`~bot.updates.Update`.

A callback is stored in the inbox as ``{"received_at": <ms>, "body": <decrypted plaintext>}``:
the robot and AI-bot payloads carry no send time, so the time the door received them is part of
what was received, and re-parsing a stored payload gives the same update every time.

A callback route does not build the update: it only *admits* the payload (each door's ``admit``
refuses what its full parse refuses and returns an :class:`Admitted`, the inbox key), and the
inbox worker parses the stored payload after the answer went out.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, NamedTuple


class DoorFormatError(ValueError):
    """A decrypted payload that is not a usable message or event; the text says why."""


class Admitted(NamedTuple):
    """What a callback route needs before its answer: the inbox de-duplication key (the message
    id, or the stable key of an event) and, for events, the event's name ("" for messages). A
    tuple: one is made for every callback."""

    key: str
    event: str = ""


def store_form(body: str, received_at: datetime) -> str:
    """The inbox payload for a decrypted callback ``body`` received at ``received_at``."""
    ms = int(received_at.timestamp() * 1000)
    # json.dumps({"received_at": ms, "body": body}, ensure_ascii=False, separators=(",", ":")),
    # without building an encoder per call (this runs once per callback, before the answer).
    return f'{{"received_at":{ms},"body":{encode_basestring(body)}}}'


def load_form(payload: str) -> tuple[str, datetime]:
    """The decrypted body and the receive time back from :func:`store_form`'s output."""
    try:
        data = json.loads(payload)
        body, ms = data["body"], data["received_at"]
    except (ValueError, KeyError, TypeError):
        raise DoorFormatError("stored payload is not a callback envelope") from None
    if not isinstance(body, str) or not isinstance(ms, int):
        raise DoorFormatError("stored payload is not a callback envelope")
    return body, datetime.fromtimestamp(ms / 1000, tz=UTC)


def text_field(data: Any, *path: str) -> str:
    """``data[path[0]][path[1]]...`` as a string, "" where anything along the way is missing."""
    for key in path:
        if not isinstance(data, dict):
            return ""
        data = data.get(key)
    if data is None or isinstance(data, dict | list):
        return ""
    return str(data)


def stable_key(prefix: str, *fields: object) -> str:
    """A de-duplication key for events that have no message id (PROTOCOL.md §3): the same
    fields give the same key on every retry."""
    digest = hashlib.sha1("\x1f".join(str(f) for f in fields).encode()).hexdigest()[:32]
    return f"{prefix}:{digest}"


_LEADING_MENTION = re.compile(r"^\s*@\S+\s*")


def strip_leading_mention(text: str) -> str:
    """Drop the ``@bot`` WeCom puts in front of a message that mentions a bot, so that
    ``@助手 打卡 Day3`` reads as the command ``打卡 Day3``."""
    return _LEADING_MENTION.sub("", text, count=1)


def epoch_seconds(value: str, field: str) -> datetime:
    try:
        seconds = int(value)
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise DoorFormatError(f"{field} {value!r} is not a Unix time") from None
