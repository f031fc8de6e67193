"""The outbox delivery worker: claims due rows, sends them through WeCom, records the outcome.

Channels resolve to WeCom calls here, at delivery time (so a config or roster change applies to
queued messages):

- ``group`` (and ``reply`` to a configured group): the group's ``post_via`` door: the robot
  webhook (key from the env var named by ``robot_key_env``), the app group chat
  (``appchat/send``), or the AI bot's active push through an :class:`AibotPusher`.
- ``private`` (and ``reply`` to anyone else): an app message (``message/send``) to an internal
  member; an ``add_msg_template`` task for an external learner, sent by the staff member who owns
  the contact (``Member.owner_userid``).

Images: the robot webhook carries them inline (base64 and md5, at most 2 MB); app messages, app
group chats and ``add_msg_template`` tasks upload them first (``media/upload``, at most 10 MB) and
send the ``media_id``; the AI bot's active push carries text only. A learning-evidence card is
queued as its numbers and drawn here, in a worker thread, when its row is sent.

Delivery semantics. A row is claimed (compare-and-set, lease ``claim_lease_seconds``) in its own
short transaction, sent with no transaction open, and marked sent in another short transaction
right after WeCom answers. A worker that dies after claiming leaves the row to be taken again
when the lease ends. The only double-send window is a death between WeCom's ok and the mark
(milliseconds), and a call that timed out after WeCom accepted it (the retry sends it again):
HTTP gives no way to close these, since WeCom's send calls take no idempotency key.
The outbox key makes re-queues and replicas one row, so they never add a second send.

Retries: network errors, timeouts and 5xx back off exponentially with jitter
(``backoff_base_seconds * 2**(attempt-1)``, capped, times a random 0.5-1.0); 45009 waits at least
a minute; other errcodes (oversized content, invalid key...) fail the row at once. Rate limits per
bucket (robot 20/min, app message 30/min per member) are counted from the rows sent in the last
60 s, so every replica sees the same count; a row over the limit is deferred to the moment a slot
frees. Rows of one bucket go out in queue order (the parts of a long text stay in order).
Time comes from the injected clock: tests advance a ``ManualClock`` and call
:meth:`DeliveryWorker.deliver_due`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bot import metrics
from bot.cards.fonts import FontNotFoundError
from bot.cards.member import card_png
from bot.clock import Clock
from bot.config import GroupSettings, Settings
from bot.outbound import Channel, Kind
from bot.updates import SenderKind, sender_kind_of
from bot.wecom.api import (
    TOKEN_ERRORS,
    ApiError,
    RateLimitedError,
    RetryableError,
    WeComAPI,
    WeComError,
)
from storage import outbox
from storage.db import Database
from storage.outbox import OutboxRow
from storage.roster import Member

log = logging.getLogger(__name__)

IMAGE_LIMIT = 2 * 1024 * 1024
UPLOAD_IMAGE_LIMIT = 10 * 1024 * 1024  # media/upload images (path/90253)
WINDOW = timedelta(seconds=60)
#: WeCom errcodes worth retrying later: -1 system busy (path/90313), and token errors that
#: survived the API client's one refresh-and-retry.
RETRYABLE_ERRCODES = frozenset({-1}) | TOKEN_ERRORS


class AibotPusher(Protocol):
    """Active push over the AI bot's long connection (``aibot_send_msg``, path/101463).

    Implemented by the long-connection client; it raises
    :class:`~bot.wecom.api.RetryableError` while the connection is down.
    """

    async def push(self, chat_id: str, msgtype: str, content: str) -> None: ...


class UndeliverableError(Exception):
    """The row cannot be sent as configured (no robot key, no owner, unsupported kind)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class MissingSecretError(Exception):
    """A secret the row's door needs is not in the environment (a robot key): the row waits
    for it, as rows wait while the corp secret is missing, instead of failing for good."""

    reason = "missing_secret"


#: How long a row waits before looking for a missing secret again (not counted as an attempt).
MISSING_SECRET_RECHECK = timedelta(minutes=5)


@dataclass(frozen=True)
class Route:
    """Where one row goes: the door, the WeCom target, and the door's rate limit per minute."""

    door: str  # robot / appchat / aibot / app / template
    target: str  # robot key env, app chat id, aibot chat id, userid, external userid
    per_minute: int | None = None
    sender: str = ""  # add_msg_template: the owning staff member


@dataclass
class Claimed:
    row: OutboxRow
    version: int
    route: Route


@dataclass
class DeliveryReport:
    """What one :meth:`DeliveryWorker.deliver_due` round did."""

    sent: int = 0
    retried: int = 0
    deferred: int = 0
    failed: int = 0
    contended: int = 0
    """Rows another worker claimed first, plus claim rounds rolled back by a lock race: the
    round found work but could not take it, so "nothing claimed" does not mean "nothing due"."""
    errors: list[str] = field(default_factory=list)

    @property
    def progressed(self) -> bool:
        """True when the round moved at least one row on (sent, retried, deferred, failed)."""
        return bool(self.sent or self.retried or self.deferred or self.failed)

    @property
    def idle(self) -> bool:
        """True when the round found nothing due at all."""
        return not (self.progressed or self.contended)

    def add(self, other: DeliveryReport) -> None:
        """Fold another round's counts into this one."""
        self.sent += other.sent
        self.retried += other.retried
        self.deferred += other.deferred
        self.failed += other.failed
        self.contended += other.contended
        self.errors.extend(other.errors)


class DeliveryWorker:
    """Delivers due outbox rows; safe to run in several processes on one database."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        api: WeComAPI,
        clock: Clock,
        *,
        aibot: AibotPusher | None = None,
        env: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        batch: int = 100,
    ) -> None:
        self.settings = settings
        self.policy = settings.wecom
        self.db = db
        self.api = api
        self.clock = clock
        self.aibot = aibot
        self.env = os.environ if env is None else env
        self.rng = rng or random.Random()
        self._told: set[str] = set()  # missing secrets already logged (once each)
        self.batch = batch

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Deliver due rows every ``interval`` seconds until ``stop`` is set (``cohortbot run``)."""
        while not stop.is_set():
            try:
                await self.deliver_due()
            except Exception:
                log.exception("outbox delivery round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def drain(self, pause: float = 0.05, max_contended_rounds: int = 200) -> DeliveryReport:
        """Deliver rounds until one finds nothing due (``cohortbot outbox deliver --drain``).

        A round that only lost its rows to another worker is not the end: the other worker's
        claims hold back just their buckets, so the next round finds the rest. Rounds that do
        nothing but lose races (a database refusing every claim) end the drain after
        ``max_contended_rounds`` in a row.
        """
        total = DeliveryReport()
        contended_rounds = 0
        while True:
            report = await self.deliver_due()
            total.add(report)
            if report.idle:
                return total
            if report.progressed:
                contended_rounds = 0
                continue
            contended_rounds += 1
            if contended_rounds >= max_contended_rounds:
                log.warning("outbox drain stopped after %d contended rounds", contended_rounds)
                return total
            await asyncio.sleep(pause)  # let the other worker move on

    async def deliver_due(self) -> DeliveryReport:
        """One round: claim what is due now, send it, record the outcomes."""
        report = DeliveryReport()
        claimed = await self.claim_due(report)
        by_bucket: dict[str, list[Claimed]] = defaultdict(list)
        for item in claimed:
            by_bucket[item.row.bucket].append(item)
        await asyncio.gather(*(self._send_bucket(items, report) for items in by_bucket.values()))
        return report

    async def claim_due(self, report: DeliveryReport | None = None) -> list[Claimed]:
        """Claim the due rows this worker may send now.

        A bucket's rate limit is counted from its rows sent in the last minute plus the rows
        claimed here; another worker cannot be sending the same bucket meanwhile, because its
        claimed row (lease in the future) holds back the rest of the bucket (see
        :func:`storage.outbox.due`). A row over the limit is deferred to the moment a slot frees.
        """
        report = report or DeliveryReport()
        try:
            return await self._claim_due(report)
        except OperationalError as exc:
            # Two workers claiming at once can meet in a deadlock (PostgreSQL aborts one) or a
            # busy timeout (SQLite): this round claims nothing and the rows stay as they were.
            log.warning("outbox claim round rolled back, retrying next round: %s", exc.orig)
            report.contended += 1
            return []

    async def _claim_due(self, report: DeliveryReport) -> list[Claimed]:
        now = self.clock.now()
        lease = timedelta(seconds=self.policy.claim_lease_seconds)
        claimed: list[Claimed] = []
        async with self.db.unit_of_work() as uow:
            session = uow.writer
            windows: dict[str, list[datetime]] = {}
            stopped: set[str] = set()
            for row in outbox.due(session, now, self.batch):
                assert row.id is not None
                if row.bucket in stopped:
                    continue
                try:
                    route = self._route(session, row)
                except UndeliverableError as exc:
                    outbox.reschedule(session, row.id, row.version, now, str(exc), failed=True)
                    report.failed += 1
                    report.errors.append(str(exc))
                    metrics.OUTBOX_FAILURES.inc(channel=row.channel, reason=exc.reason)
                    continue
                if row.attempts >= self.policy.max_attempts:  # its last claim's lease ran out
                    error = row.last_error or "gave up after the last claim expired"
                    outbox.reschedule(session, row.id, row.version, now, error, failed=True)
                    report.failed += 1
                    metrics.OUTBOX_FAILURES.inc(channel=route.door, reason="gave_up")
                    continue
                if route.per_minute is not None:
                    if row.bucket not in windows:
                        windows[row.bucket] = outbox.sent_in_window(
                            session, row.bucket, now - WINDOW
                        )
                    window = windows[row.bucket]
                    if len(window) >= route.per_minute:
                        # A slot frees when the oldest send in the window is a minute old.
                        at = window[len(window) - route.per_minute] + WINDOW
                        outbox.defer(session, row, at)
                        stopped.add(row.bucket)
                        report.deferred += 1
                        continue
                if not outbox.claim(session, row, now, lease):
                    stopped.add(row.bucket)  # another worker is sending this bucket
                    report.contended += 1
                    continue
                if route.per_minute is not None:
                    windows[row.bucket].append(now)
                claimed.append(Claimed(row, row.version + 1, route))
        return claimed

    # -- sending ---------------------------------------------------------------------------

    async def _send_bucket(self, items: list[Claimed], report: DeliveryReport) -> None:
        """Send one bucket's rows in order; after a retryable failure, hand the rest back."""
        lease = timedelta(seconds=self.policy.claim_lease_seconds)
        for i, item in enumerate(items):
            if i > 0:
                # The rows before took time: renew this row's claim so its lease runs from now.
                assert item.row.id is not None
                async with self.db.unit_of_work() as uow:
                    until = self.clock.now() + lease
                    if not outbox.renew(uow.writer, item.row.id, item.version, until):
                        log.warning("outbox row %s: claim lost, leaving it", item.row.id)
                        return
            retry_at = await self._send_one(item, report)
            if retry_at is not None:
                async with self.db.unit_of_work() as uow:
                    for rest in items[i + 1 :]:
                        assert rest.row.id is not None
                        outbox.reschedule(
                            uow.writer,
                            rest.row.id,
                            rest.version,
                            retry_at,
                            None,
                            refund_attempt=True,
                        )
                return

    async def _send_one(self, item: Claimed, report: DeliveryReport) -> datetime | None:
        """Send one claimed row and record the outcome; the retry time if it will be retried."""
        row, route = item.row, item.route
        assert row.id is not None
        try:
            await self._call(row, route)
        except MissingSecretError as exc:
            return await self._wait_for_secret(item, exc, report)
        except (ApiError, UndeliverableError) as exc:
            return await self._failed(item, exc, report)
        except Exception as exc:  # a bug must not leave the row claimed until the lease ends
            log.exception("outbox row %s: unexpected error", row.id)
            return await self._failed(item, RetryableError(repr(exc), "unexpected"), report)
        async with self.db.unit_of_work() as uow:
            if not outbox.mark_sent(uow.writer, row.id, item.version, self.clock.now(), route.door):
                log.warning("outbox row %s: claim lost before the mark (sent twice?)", row.id)
        report.sent += 1
        metrics.OUTBOX_SENT.inc(channel=route.door)
        return None

    async def _wait_for_secret(
        self, item: Claimed, exc: MissingSecretError, report: DeliveryReport
    ) -> datetime:
        """Leave the row pending (not an attempt) until the operator sets the secret."""
        assert item.row.id is not None
        at = self.clock.now() + MISSING_SECRET_RECHECK
        metrics.OUTBOX_FAILURES.inc(channel=item.route.door, reason=exc.reason)
        report.errors.append(str(exc))
        report.retried += 1
        async with self.db.unit_of_work() as uow:
            outbox.reschedule(
                uow.writer, item.row.id, item.version, at, str(exc), refund_attempt=True
            )
        if str(exc) not in self._told:
            self._told.add(str(exc))
            log.warning("outbox: %s; group messages wait until it is set", exc)
        return at

    async def _failed(
        self, item: Claimed, exc: Exception, report: DeliveryReport
    ) -> datetime | None:
        row, route = item.row, item.route
        assert row.id is not None
        now = self.clock.now()
        reason = getattr(exc, "reason", "error")
        metrics.OUTBOX_FAILURES.inc(channel=route.door, reason=reason)
        report.errors.append(str(exc))
        retryable = isinstance(exc, RetryableError | RateLimitedError) or (
            isinstance(exc, WeComError) and exc.errcode in RETRYABLE_ERRCODES
        )
        final = not retryable or row.attempts + 1 >= self.policy.max_attempts
        at = (
            now
            if final
            else now + self._backoff(row.attempts + 1, isinstance(exc, RateLimitedError))
        )
        async with self.db.unit_of_work() as uow:
            outbox.reschedule(uow.writer, row.id, item.version, at, str(exc)[:500], failed=final)
        log.warning(
            "outbox row %s (%s) %s: %s", row.id, route.door, "failed" if final else "retry", exc
        )
        if final:
            report.failed += 1
            return None
        report.retried += 1
        return at

    def _backoff(self, attempt: int, rate_limited: bool) -> timedelta:
        """Exponential backoff with jitter; at least a minute after a 45009."""
        delay = min(
            self.policy.backoff_max_seconds, self.policy.backoff_base_seconds * 2 ** (attempt - 1)
        )
        if rate_limited:
            return timedelta(seconds=max(60.0, delay) * (1 + 0.25 * self.rng.random()))
        return timedelta(seconds=delay * (0.5 + 0.5 * self.rng.random()))

    async def _call(self, row: OutboxRow, route: Route) -> None:
        payload: dict[str, Any] = json.loads(row.payload)
        kind = Kind(row.kind)
        text = str(payload.get("text", ""))
        if route.door == "robot":
            key = self.env.get(route.target, "")
            if not key:
                raise MissingSecretError(f"env var {route.target} (robot key) is not set")
            image = await self._image(payload) if kind is Kind.IMAGE else b""
            await self.api.webhook_send(key, _robot_body(kind, text, payload, image))
        elif route.door == "appchat":
            body = await self._app_body(kind, text, payload)
            await self.api.appchat_send({"chatid": route.target, **body})
        elif route.door == "app":
            body = await self._app_body(kind, text, payload)
            await self.api.message_send({"touser": route.target, **body})
        elif route.door == "template":
            task: dict[str, Any] = {
                "chat_type": "single",
                "external_userid": [route.target],
                "sender": route.sender,
            }
            if text:
                task["text"] = {"content": text}
            if kind is Kind.IMAGE:
                media_id = await self._upload_image(payload)
                task["attachments"] = [{"msgtype": "image", "image": {"media_id": media_id}}]
            await self.api.add_msg_template(task)
        elif route.door == "aibot":
            if self.aibot is None:
                raise UndeliverableError(
                    "no AI-bot long connection in this process", "not_configured"
                )
            if kind is Kind.IMAGE:
                raise UndeliverableError("images over the AI bot are not supported", "unsupported")
            await self.aibot.push(route.target, "markdown", text)
        else:  # pragma: no cover - routes come from _route
            raise UndeliverableError(f"unknown door {route.door}", "not_configured")

    async def _app_body(self, kind: Kind, text: str, payload: dict[str, Any]) -> dict[str, Any]:
        """An app message / app group chat body (path/90236, 90248); an image is uploaded
        first and sent by its ``media_id``."""
        if kind is Kind.IMAGE:
            media_id = await self._upload_image(payload)
            return {"msgtype": "image", "image": {"media_id": media_id}}
        if kind is Kind.MARKDOWN:
            return {"msgtype": "markdown", "markdown": {"content": text}}
        return {"msgtype": "text", "text": {"content": text}}

    async def _image(self, payload: dict[str, Any]) -> bytes:
        """A row's image: its PNG, or its card (``payload["card"]``) drawn now, in a worker
        thread, so the loop goes on answering callbacks for the 0.1 s it takes. Drawn again on
        a retry: the row keeps the card's numbers, not the 200 KB picture."""
        card = payload.get("card")
        if card is None:
            return base64.b64decode(str(payload.get("image_b64", "")))
        if not isinstance(card, dict):
            raise UndeliverableError("card is not a JSON object", "bad_card")
        try:
            return await asyncio.to_thread(card_png, card, self.settings)
        except FontNotFoundError as exc:
            raise UndeliverableError(f"card not drawn: {exc}", "no_font") from None
        except ValueError as exc:
            raise UndeliverableError(f"card not drawn: {exc}", "bad_card") from None

    async def _upload_image(self, payload: dict[str, Any]) -> str:
        """Upload a row's image as temporary media (``media/upload``), once per attempt: a
        media_id lives three days, longer than any retry of the row."""
        data = await self._image(payload)
        if len(data) > UPLOAD_IMAGE_LIMIT:
            raise UndeliverableError(f"image of {len(data)} bytes is over 10 MB", "too_large")
        return await self.api.media_upload(data, "card.png")

    # -- routing ---------------------------------------------------------------------------

    def _route(self, session: Session, row: OutboxRow) -> Route:
        """Resolve a row's channel and target to a door (see the module docstring)."""
        channel = Channel(row.channel)
        group = self.settings.group(row.target) if channel is not Channel.PRIVATE else None
        if group is not None:
            return self._group_route(group)
        if channel is Channel.GROUP:
            raise UndeliverableError(f"group {row.target} is not configured", "not_configured")
        member = session.get(Member, row.target)
        kind = member.kind if member is not None else sender_kind_of(row.target).value
        if kind == SenderKind.INTERNAL.value:
            return Route("app", row.target, self.policy.app_per_member_per_minute)
        owner = member.owner_userid if member is not None else None
        if not owner:
            raise UndeliverableError(
                f"external contact {row.target} has no owning staff member", "no_owner"
            )
        return Route("template", row.target, None, sender=owner)

    def _group_route(self, group: GroupSettings) -> Route:
        if group.post_via == "robot":
            if not group.robot_key_env:
                raise UndeliverableError(
                    f"group {group.chat_id}: post_via = robot needs robot_key_env", "not_configured"
                )
            return Route("robot", group.robot_key_env, self.policy.robot_per_minute)
        if group.post_via == "appchat":
            return Route("appchat", group.appchat_id or group.chat_id)
        return Route("aibot", group.aibot_chat_id or group.chat_id)


def _robot_body(kind: Kind, text: str, payload: dict[str, Any], image: bytes) -> dict[str, Any]:
    """A robot webhook message (path/91770); ``image`` is the PNG of an image row."""
    if kind is Kind.IMAGE:
        if len(image) > IMAGE_LIMIT:
            raise UndeliverableError(f"image of {len(image)} bytes is over 2 MB", "too_large")
        md5 = hashlib.md5(image).hexdigest()  # WeCom's checksum
        encoded = base64.b64encode(image).decode("ascii")
        return {"msgtype": "image", "image": {"base64": encoded, "md5": md5}}
    if kind is Kind.MARKDOWN:
        return {"msgtype": "markdown", "markdown": {"content": text}}
    body: dict[str, Any] = {"content": text}
    if payload.get("mentions"):
        body["mentioned_list"] = list(payload["mentions"])
    return {"msgtype": "text", "text": body}


def queue_length_collector(db: Database) -> None:
    """Set the outbox queue-length gauge from the database (register with
    ``metrics.REGISTRY.collect_with(lambda: queue_length_collector(db))``)."""
    with db.session() as session:
        metrics.set_outbox_queue_length(outbox.queue_length(session))
