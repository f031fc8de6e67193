"""The message-archive poller (会话内容存档, SPEC §1 door 4, PROTOCOL.md §1, path/91774, 95039).

It pulls decrypted archive items after the last stored ``seq`` from an :class:`ArchiveSource`,
feeds them through the pipeline (the inbox drops items it has seen, by msgid), then stores the
new ``seq``. Items are stored before the seq moves, so a crash between the two re-pulls a batch
that the inbox then drops: nothing is lost, nothing counts twice. It pulls when the app callback
brings ``msgaudit_notify`` (:meth:`ArchivePoller.wake`) and every ``poll_seconds`` otherwise.

:class:`NativeArchiveSource` is the real source, a ctypes binding to WeCom's native SDK
(``libWeWorkFinanceSdk_C.so``, Linux x86-64 only). The library comes from WeCom (path/91774) via
``archive.sdk_path``, or from the ``wecom-audit`` wheel, which bundles it (the optional extra
``cohortbot[archive-sdk]``). ``tests/test_archive_sdk.py`` runs the binding against the real
library as far as possible without WeCom's servers (error codes of Init, GetChatData through an
unreachable proxy, DecryptData); the poller's other tests use a fake source serving archive JSON.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bot.app import App
from bot.doors.archive import ArchiveFormatError, parse_item
from bot.pipeline import dumps
from bot.updates import Door, Update
from storage import doorstate

log = logging.getLogger(__name__)

SEQ_KEY = "archive.seq"


class ArchiveSource(Protocol):
    """Where archive items come from."""

    async def fetch(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` decrypted archive items with a seq greater than ``seq``, in seq order;
        each carries its ``seq``."""
        ...


class ArchiveError(RuntimeError):
    """The archive SDK refused a call; the text has its error code."""


class ArchivePoller:
    """Pulls the archive into the pipeline and remembers how far it got."""

    def __init__(
        self, bot: App, source: ArchiveSource, batch: int = 1000, poll_seconds: float = 60
    ) -> None:
        self._bot = bot
        self._source = source
        self._batch = batch
        self._interval = poll_seconds
        self._wake = asyncio.Event()
        self.skipped = 0  # malformed items, logged and stepped over

    def wake(self) -> None:
        """Pull soon (the app callback's ``msgaudit_notify``)."""
        self._wake.set()

    async def last_seq(self) -> int:
        async with self._bot.db.unit_of_work() as uow:
            value = doorstate.get(uow.writer, SEQ_KEY)
        return int(value) if value else 0

    async def pull(self) -> int:
        """Pull until the source has nothing new; return how many new items were ingested."""
        seq, new = await self.last_seq(), 0
        while True:
            items = await self._source.fetch(seq, self._batch)
            items = [i for i in items if _seq(i) > seq]
            if not items:
                return new
            pairs: list[tuple[Update, str]] = []
            for item in items:
                try:
                    update = parse_item(item, Door.ARCHIVE)
                except ArchiveFormatError as exc:
                    self.skipped += 1
                    log.warning("archive item seq %s skipped: %s", item.get("seq"), exc)
                    continue
                if update is not None:
                    pairs.append((update, dumps(item)))
            if pairs:
                result = await self._bot.pipeline.ingest(pairs)
                new += result.new
            seq = max(_seq(i) for i in items)
            async with self._bot.db.unit_of_work() as uow:
                doorstate.put(uow.writer, SEQ_KEY, str(seq), self._bot.clock.now())
            if len(items) < self._batch:
                return new

    async def run(self) -> None:
        """Pull now, then on every wake and every ``poll_seconds``, until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.pull()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("archive pull failed; retrying at the next wake or poll")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)


def _seq(item: Mapping[str, Any]) -> int:
    value = item.get("seq")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --------------------------------------------------------------------------- the native SDK


#: Shorter ``encrypt_chat_msg`` values crash ``DecryptData`` (see :meth:`decrypt_item`).
_MIN_ENCRYPTED_MSG = 13


class _Slice(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_char_p), ("len", ctypes.c_int)]


class NativeArchiveSource:
    """:class:`ArchiveSource` over ``libWeWorkFinanceSdk_C.so`` (path/91774 获取会话内容).

    ``GetChatData`` returns encrypted items; each item's ``encrypt_random_key`` is RSA-decrypted
    (PKCS#1 v1.5) with the private key matching ``publickey_ver``, and ``DecryptData`` turns
    ``encrypt_chat_msg`` into the archive JSON. SDK calls block, so they run in a thread.
    ``proxy`` (``socks5://host:port`` or ``http://host:port``) and ``proxy_password``
    (``user:password``) are passed to ``GetChatData``: WeCom only answers whitelisted IPs.

    SDK error codes (from its header): 10000 bad parameters, 10001 network error, 10002 data
    parse error, 10003 system error, 10004 key decryption failed, 10005 bad fileid, 10006
    decryption failed, 10007 no private key for the message's key version, 10008 bad
    encrypt_key, 10009 IP not allowed, 10010 data expired, 10011 certificate error.
    """

    def __init__(
        self,
        sdk_path: str,
        corp_id: str,
        secret: str,
        private_keys: Mapping[int, bytes],
        timeout_s: int = 10,
        proxy: str = "",
        proxy_password: str = "",
    ) -> None:
        from cryptography.hazmat.primitives import serialization

        self._lib = ctypes.CDLL(sdk_path)
        self._declare()
        self._keys = {
            ver: serialization.load_pem_private_key(pem, password=None)
            for ver, pem in private_keys.items()
        }
        self._timeout = timeout_s
        self._proxy = proxy.encode() or None
        self._proxy_password = proxy_password.encode() or None
        self._sdk: int | None = self._lib.NewSdk()
        if not self._sdk:
            raise ArchiveError("NewSdk returned NULL")
        code = self._lib.Init(self._sdk, corp_id.encode(), secret.encode())
        if code != 0:
            self.close()
            raise ArchiveError(f"Init failed with code {code}")

    def _declare(self) -> None:
        lib = self._lib
        lib.NewSdk.argtypes = []
        lib.NewSdk.restype = ctypes.c_void_p
        lib.Init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.Init.restype = ctypes.c_int
        lib.NewSlice.argtypes = []
        lib.NewSlice.restype = ctypes.POINTER(_Slice)
        lib.FreeSlice.argtypes = [ctypes.POINTER(_Slice)]
        lib.FreeSlice.restype = None
        lib.GetContentFromSlice.argtypes = [ctypes.POINTER(_Slice)]
        lib.GetContentFromSlice.restype = ctypes.c_void_p
        lib.GetSliceLen.argtypes = [ctypes.POINTER(_Slice)]
        lib.GetSliceLen.restype = ctypes.c_int
        lib.GetChatData.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ulonglong,
            ctypes.c_uint,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(_Slice),
        ]
        lib.GetChatData.restype = ctypes.c_int
        lib.DecryptData.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_Slice)]
        lib.DecryptData.restype = ctypes.c_int
        lib.DestroySdk.argtypes = [ctypes.c_void_p]
        lib.DestroySdk.restype = None

    def _slice_bytes(self, slice_: Any) -> bytes:
        length = self._lib.GetSliceLen(slice_)
        if length <= 0:
            return b""
        return ctypes.string_at(self._lib.GetContentFromSlice(slice_), length)

    def _get_chat_data(self, seq: int, limit: int) -> list[dict[str, Any]]:
        out = self._lib.NewSlice()
        try:
            code = self._lib.GetChatData(
                self._sdk, seq, limit, self._proxy, self._proxy_password, self._timeout, out
            )
            if code != 0:
                raise ArchiveError(f"GetChatData failed with code {code}")
            data = json.loads(self._slice_bytes(out))
        finally:
            self._lib.FreeSlice(out)
        if data.get("errcode", 0) != 0:
            raise ArchiveError(f"GetChatData: {data.get('errcode')} {data.get('errmsg')}")
        chatdata = data.get("chatdata") or []
        return [c for c in chatdata if isinstance(c, dict)]

    def decrypt_item(self, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """One ``GetChatData`` item decrypted to archive JSON (with its ``seq``), or None when no
        private key has its ``publickey_ver``; :class:`ArchiveError` when the SDK refuses."""
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = self._keys.get(int(item.get("publickey_ver", 0)))
        if not isinstance(key, rsa.RSAPrivateKey):
            log.warning(
                "archive seq %s: no private key version %s",
                item.get("seq"),
                item.get("publickey_ver"),
            )
            return None
        random_key = key.decrypt(base64.b64decode(item["encrypt_random_key"]), padding.PKCS1v15())
        encrypted = str(item["encrypt_chat_msg"]).encode()
        if len(encrypted) < _MIN_ENCRYPTED_MSG:
            # The SDK (version of 2025-02) aborts the whole process (an uncaught C++
            # std::out_of_range) on a message shorter than 13 bytes, instead of returning a code.
            raise ArchiveError(f"encrypt_chat_msg of {len(encrypted)} bytes is too short")
        out = self._lib.NewSlice()
        try:
            code = self._lib.DecryptData(random_key, encrypted, out)
            if code != 0:
                raise ArchiveError(f"DecryptData failed with code {code}")
            message: dict[str, Any] = json.loads(self._slice_bytes(out))
        finally:
            self._lib.FreeSlice(out)
        message["seq"] = int(item["seq"])
        return message

    def _fetch(self, seq: int, limit: int) -> list[dict[str, Any]]:
        items = []
        for raw in self._get_chat_data(seq, limit):
            try:
                message = self.decrypt_item(raw)
            except (ArchiveError, ValueError, KeyError) as exc:
                log.warning("archive seq %s not decrypted: %s", raw.get("seq"), exc)
                message = None
            # An undecryptable item still moves the seq on: it would fail the same way again.
            items.append(
                message
                or {
                    "seq": int(raw.get("seq", 0)),
                    "action": "switch",
                    "msgid": str(raw.get("msgid", "")),
                    "from": "",
                }
            )
        return items

    async def fetch(self, seq: int, limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._fetch, seq, limit)

    def close(self) -> None:
        """Free the SDK handle (idempotent)."""
        if self._sdk:
            self._lib.DestroySdk(self._sdk)
            self._sdk = None


def load_private_keys(value: str) -> dict[int, bytes]:
    """The archive private key from its env var: PEM text or a path to a PEM file. Version 1
    unless the value is a JSON object ``{"<publickey_ver>": "<PEM or path>", ...}``."""

    def pem(text: str) -> bytes:
        return text.encode() if "-----BEGIN" in text else Path(text).read_bytes()

    stripped = value.strip()
    if stripped.startswith("{"):
        return {int(k): pem(v) for k, v in json.loads(stripped).items()}
    return {1: pem(stripped)}


def bundled_sdk_path() -> str | None:
    """``libWeWorkFinanceSdk_C.so`` as bundled by the ``wecom-audit`` wheel (the optional extra
    ``cohortbot[archive-sdk]``), or None. The package is located, not imported: its own module
    loads a second native library we do not need."""
    try:
        spec = importlib.util.find_spec("wecom_audit")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "C_sdk" / "libWeWorkFinanceSdk_C.so"
    return str(path) if path.is_file() else None


def native_source(
    sdk_path: str,
    corp_id: str,
    secret: str,
    private_key: str,
    proxy: str = "",
    proxy_password: str = "",
) -> NativeArchiveSource:
    """Open the native archive SDK (``sdk_path``, else the one ``wecom-audit`` bundles), or
    raise :class:`ArchiveError` saying why it is missing."""
    path = sdk_path or bundled_sdk_path() or ""
    if not path or not Path(path).is_file():
        raise ArchiveError(
            f"archive.sdk_path {sdk_path!r} is not a file: download libWeWorkFinanceSdk_C.so "
            "from WeCom (path/91774) and point archive.sdk_path at it, or install "
            "'cohortbot[archive-sdk]' (the wecom-audit wheel bundles it, Linux x86-64)"
        )
    return NativeArchiveSource(
        path,
        corp_id,
        secret,
        load_private_keys(private_key),
        proxy=proxy,
        proxy_password=proxy_password,
    )


def items_after(items: Sequence[dict[str, Any]], seq: int, limit: int) -> list[dict[str, Any]]:
    """The items a source returns for ``fetch(seq, limit)`` (used by fake sources)."""
    return [i for i in items if _seq(i) > seq][:limit]
