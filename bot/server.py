"""The HTTP side of ``cohortbot run`` (SPEC §1 doors 1-3, §15): the callback routes, the durable
inbox they write to, the inbox worker that processes it, and ``/healthz`` / ``/readyz``.

A callback route only translates (STYLE habit 1): check the query, verify the signature, decrypt,
admit the plaintext (the door's ``admit`` refuses with 400 what its full parse would refuse, before
anything is stored, and gives the inbox key), hand the raw event to the :class:`InboxWriter` and
answer 200 once it is committed. The update is built afterwards, by the :class:`InboxWorker` from
the stored payload, and handlers run there (STYLE habit 2: acknowledge, then work); WeCom retries a
callback not answered in 5 s, and a retry hits the inbox's unique key.

The route is the part of the server that must keep up with a burst, so it does only what the 200
depends on, and the process freezes its start-up heap (:func:`serve`), so that the garbage
collector's full passes, which a burst of requests triggers every few hundred callbacks, do not
walk the hundreds of thousands of long-lived objects the bot holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from time import monotonic
from typing import Any

from aiohttp import web
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from bot import metrics
from bot.app import App
from bot.config import ConfigError
from bot.dashboard.web import build_dashboard
from bot.doors import aibot, robot
from bot.doors import app as app_door
from bot.doors.aibot_ws import AibotConnection
from bot.doors.archive_poller import ArchiveError, ArchivePoller, ArchiveSource, native_source
from bot.doors.crypto import CallbackRejectedError, DoorCrypto, parse_xml
from bot.doors.wire import Admitted, DoorFormatError, store_form
from bot.inbox_journal import InboxJournal
from bot.inbox_writer import InboxWriter
from bot.metrics_http import earliest, inbox_collector, metrics_routes
from bot.scheduler import CohortScheduler
from bot.updates import Door
from bot.wecom.api import WeComAPI, client_from_settings
from bot.wecom.delivery import DeliveryWorker, queue_length_collector
from storage import inbox
from storage.db import alembic_config

log = logging.getLogger(__name__)

CALLBACKS = metrics.counter(
    "cohortbot_callbacks_total", "Callback requests by door and HTTP status", ("door", "status")
)
INBOX_LAG = metrics.gauge(
    "cohortbot_inbox_lag_seconds", "Age of the oldest stored but unprocessed inbound event"
)


def set_inbox_lag(seconds: float) -> None:
    """Set the inbox lag gauge (the worker calls it after each drain; /metrics may too)."""
    INBOX_LAG.set(max(0.0, seconds))


# --------------------------------------------------------------------------- the inbox worker


class InboxWorker:
    """Processes stored events after the answer went out: woken on every new row, and once at
    start for whatever a crashed process left unprocessed.

    Answering comes first, in three ways:

    * While callbacks keep arriving the worker waits; it starts once none has arrived for
      ``idle_ms`` or the oldest waiting event is ``max_lag_ms`` old, whichever comes first
      (a burst is answered first and processed in the pause after it; the lag stays bounded).
    * It works in slices, one transaction each, sized from the measured time per event: about
      ``slice_ms`` while callbacks are arriving; with none arriving, half the time since the
      last one, up to ten times ``slice_ms`` (a burst that starts meanwhile waits for one short
      slice after a short pause, and a long catch-up runs in larger transactions); at least
      ``MIN_SLICE`` events, so a transaction's fixed cost stays small beside the work, at most
      ``batch``. The event loop,
      which also serves the callbacks, is never held for long, and on SQLite the inbox
      writer's commit never waits long behind a processing transaction.
    * While callbacks are arriving, after each slice it leaves the loop to them for as long as
      the slice took: processing gets at most half the loop under load, all of it after.
    """

    MIN_SLICE = 10
    IDLE_SLICE_FACTOR = 10

    def __init__(
        self,
        bot: App,
        batch: int,
        idle_ms: int = 0,
        max_lag_ms: int = 1000,
        slice_ms: int = 5,
        journal: InboxJournal | None = None,
    ) -> None:
        self._bot = bot
        self._journal = journal
        self._batch = batch
        self._idle = idle_ms / 1000
        self._max_lag = max_lag_ms / 1000
        self._slice = slice_ms / 1000
        self.per_event = 0.001  #: seconds per event, measured as slices run
        self._wake = asyncio.Event()
        self._wake.set()  # leftovers from before a restart
        #: A new event was stored (:meth:`touch` was called when its callback arrived). The
        #: event's own ``set``, not a method that calls it: it runs for every callback.
        self.wake = self._wake.set
        self._lag_at = 0.0
        self._last_arrival = -1e9
        self.processed = 0

    def touch(self) -> None:
        """A callback is arriving: not a pause."""
        # The worker's times are monotonic seconds (what the default event loop's time() reads,
        # without its method call: this runs for every callback). Not business time, which
        # comes from the injected clock.
        self._last_arrival = monotonic()

    async def _wait_for_a_pause(self) -> None:
        first = monotonic()
        while True:
            now = monotonic()
            quiet, waited = now - self._last_arrival, now - first
            if quiet >= self._idle or waited >= self._max_lag:
                return
            await asyncio.sleep(min(self._idle - quiet, self._max_lag - waited))

    def busy(self, quiet: float) -> bool:
        """Callbacks are arriving: the last came ``quiet`` seconds ago, within ``idle_ms``."""
        return quiet < max(self._idle, 0.005)

    def slice_size(self, quiet: float) -> int:
        """Events for the next slice, ``quiet`` seconds after the last callback arrived."""
        if self.busy(quiet):
            target = self._slice
        else:
            target = min(max(self._slice, quiet / 2), self._slice * self.IDLE_SLICE_FACTOR)
        wanted = int(target / self.per_event)
        return max(min(self.MIN_SLICE, self._batch), min(self._batch, wanted))

    async def drain(self) -> None:
        """Process everything pending, slice by slice, giving way to callbacks in between."""
        while True:
            # Arrivals are only seen while the loop is ours to give: judge from the slice start.
            began = monotonic()
            quiet = began - self._last_arrival
            size = self.slice_size(quiet)
            journalled = self._journal is not None and self._journal.pending()
            if journalled:
                await self._journal.absorb(size)  # type: ignore[union-attr]
            n = await self._bot.pipeline.process_pending(size)
            spent = monotonic() - began
            self.processed += n
            if n:
                self.per_event = 0.7 * self.per_event + 0.3 * (spent / n)
            if n < size and not journalled:
                return
            # Callbacks first: under load they get the loop for as long as the slice took; a
            # short sleep otherwise (not sleep(0)) lets a new request's handler run and be seen.
            await asyncio.sleep(spent if self.busy(quiet) else 0.001)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await self._wait_for_a_pause()
            self._wake.clear()
            try:
                await self.drain()
                if monotonic() - self._lag_at > 1:
                    self._lag_at = monotonic()
                    await self._update_lag()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inbox worker failed; retrying in 1 s")
                await asyncio.sleep(1)
                self._wake.set()

    async def _update_lag(self) -> None:
        async with self._bot.db.unit_of_work() as uow:
            oldest = inbox.oldest_pending_at(uow.writer)
        if self._journal is not None:  # callbacks not moved into the table yet
            oldest = earliest(oldest, self._journal.waiting()[1])
        now = self._bot.clock.now()
        set_inbox_lag((now - oldest).total_seconds() if oldest else 0.0)


# --------------------------------------------------------------------------- callback routes

#: A door's admit: the decrypted text, its UTF-8 and the receive time to the inbox key.
Admitter = Callable[[str, bytes, datetime], Admitted]


@dataclass(frozen=True)
class DoorRoute:
    door: Door
    crypto: DoorCrypto
    json_body: bool  # the AI bot POSTs {"encrypt": ...}; robots and apps POST XML
    admit: Admitter
    #: The label values of ``cohortbot_callbacks_total`` for a 200 (counted on every callback).
    ok_labels: tuple[str, str]


class Server:
    """The aiohttp application's state: doors, inbox writer and worker, background tasks."""

    def __init__(
        self,
        bot: App,
        env: Mapping[str, str] | None = None,
        archive_source: ArchiveSource | None = None,
        with_delivery: bool = True,
    ) -> None:
        self.bot = bot
        self.with_delivery = with_delivery
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.archive_source = archive_source
        self.archive: ArchivePoller | None = None
        self.aibot_ws: AibotConnection | None = None
        self.api: WeComAPI | None = None
        self._delivery_stop = asyncio.Event()
        self.settings = bot.settings.server
        journal = self.settings.inbox_journal or bot.db.dialect != "sqlite"
        self.writer = InboxWriter(
            bot.db, bot.clock.now, self.settings.commit_delay_ms, None if journal else "loop"
        )
        self.worker = InboxWorker(
            bot,
            self.settings.inbox_batch,
            self.settings.inbox_idle_ms,
            self.settings.inbox_max_lag_ms,
            self.settings.inbox_slice_ms,
            self.writer.journal,
        )
        self.tasks: set[asyncio.Task[Any]] = set()
        self._worker_task: asyncio.Task[Any] | None = None
        #: Called when the app callback brings ``msgaudit_notify`` (the archive poller's wake).
        self.on_msgaudit_notify: list[Callable[[], None]] = []
        self.doors: list[DoorRoute] = []
        specs: list[tuple[Door, Any, str, bool, Admitter]] = [
            (Door.AIBOT, self.settings.aibot, "", True, aibot.admit),
            (Door.ROBOT, self.settings.robot, "", False, robot.admit),
            (Door.APP, self.settings.app, self.settings.corp_id, False, app_door.admit),
        ]
        for door, cfg, receive_id, json_body, admit in specs:
            secrets = cfg.secrets(self.env)
            if secrets is None:
                log.warning(
                    "%s callback off: set %s and %s", door.value, cfg.token_env, cfg.aes_key_env
                )
                continue
            try:
                crypto = DoorCrypto(secrets[0], secrets[1], receive_id)
            except ValueError as exc:
                raise ConfigError(f"{cfg.aes_key_env}: {exc}") from None
            self.doors.append(DoorRoute(door, crypto, json_body, admit, (door.value, "200")))
        self._heads = set(ScriptDirectory.from_config(alembic_config(bot.db.engine)).get_heads())

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background until shutdown (STYLE habit 2)."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def start(self, _app: web.Application) -> None:
        self.writer.start()
        self._worker_task = self.spawn(self.worker.run(), "inbox-worker")
        self._start_archive()
        self._start_aibot_ws()
        if self.with_delivery:
            self._start_delivery()

    def _start_delivery(self) -> None:
        """Send the outbox (SPEC §12) from this process, when the WeCom API is configured."""
        settings = self.bot.settings
        try:
            self.api = client_from_settings(settings, self.bot.clock, self.env)
        except ConfigError as exc:
            log.error("outbox delivery off (messages wait in the outbox): %s", exc)
            return
        pusher = _AibotPush(self.aibot_ws) if self.aibot_ws is not None else None
        worker = DeliveryWorker(
            settings, self.bot.db, self.api, self.bot.clock, aibot=pusher, env=self.env
        )
        self.spawn(worker.run(self._delivery_stop), "outbox-delivery")

    def _start_aibot_ws(self) -> None:
        cfg = self.bot.settings.aibot_ws
        if not cfg.enabled:
            return
        secret = self.env.get(cfg.secret_env, "")
        if not cfg.bot_id or not secret:
            log.error("AI-bot long connection off: set aibot_ws.bot_id and $%s", cfg.secret_env)
            return
        self.aibot_ws = AibotConnection(
            self.bot,
            cfg.url,
            cfg.bot_id,
            secret,
            ping_seconds=cfg.ping_seconds,
            max_backoff=cfg.max_backoff_seconds,
        )
        self.spawn(self.aibot_ws.run(), "aibot-ws")

    def _start_archive(self) -> None:
        cfg = self.bot.settings.archive
        source = self.archive_source
        if source is None and cfg.enabled:
            try:
                source = native_source(
                    cfg.sdk_path,
                    self.settings.corp_id,
                    self.env.get(cfg.secret_env, ""),
                    self.env.get(cfg.private_key_env, ""),
                    proxy=cfg.proxy,
                    proxy_password=self.env.get(cfg.proxy_password_env, ""),
                )
            except (ArchiveError, OSError, ValueError) as exc:
                log.error("archive poller off: %s", exc)
                return
        if source is None:
            return
        self.archive = ArchivePoller(self.bot, source, cfg.batch, cfg.poll_seconds)
        self.on_msgaudit_notify.append(self.archive.wake)
        self.spawn(self.archive.run(), "archive-poller")

    async def stop(self, _app: web.Application) -> None:
        self._delivery_stop.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.api is not None:
            await self.api.close()
        # No callback arrives any more (the site is closed before cleanup): move the journal
        # into the table now, so a graceful stop leaves none of it behind.
        await self.flush_journal()
        await self.writer.aclose()
        await asyncio.to_thread(self.writer.stop)

    async def flush_journal(self) -> int:
        """Move every journalled callback into the inbox table now (a graceful stop leaves none
        behind; tests look at the table); the number moved."""
        journal = self.writer.journal
        return 0 if journal is None else await journal.drain()

    # -- checks shared by GET and POST

    def _query(self, request: web.Request, *names: str) -> list[str]:
        query = request.query
        values = [query.get(n, "") for n in names]
        if not all(values):
            raise _missing(names, values)
        return values

    def _check_timestamp(self, timestamp: str, now: float) -> None:
        """The signed ``timestamp`` against ``now`` (Unix time, from the injected clock)."""
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise CallbackRejectedError(400, "timestamp is not a Unix time")
        window = self.settings.timestamp_window_seconds
        if window and abs(now - int(timestamp)) > window:
            # A captured request replayed later, or a sender with a broken clock.
            raise CallbackRejectedError(403, "timestamp outside the accepted window")

    # -- handlers

    def handlers(self, door: DoorRoute) -> tuple[Any, Any]:
        async def verify(request: web.Request) -> web.StreamResponse:
            try:
                signature, timestamp, nonce, echostr = self._query(
                    request, "msg_signature", "timestamp", "nonce", "echostr"
                )
                self._check_timestamp(timestamp, self.bot.clock.now().timestamp())
                echo = door.crypto.verify_url(signature, timestamp, nonce, echostr)
            except CallbackRejectedError as exc:
                return _reject(door.door, exc)
            CALLBACKS.inc(door=door.door.value, status="200")
            # Only the decrypted echostr, nothing else in the body (PROTOCOL.md §2).
            return web.Response(text=echo, content_type="text/plain")

        door_value, namespace = door.door.value, door.door.namespace
        journalled = self.writer.journal is not None
        limit, clock = self.settings.max_body_bytes, self.bot.clock
        crypto, json_body, admit = door.crypto, door.json_body, door.admit

        async def receive(request: web.Request) -> web.StreamResponse:
            # Check, verify, decrypt and admit (in this one function: it runs for every
            # callback), then store and answer.
            self.worker.touch()
            try:
                query = request.query
                signature = query.get("msg_signature", "")
                timestamp = query.get("timestamp", "")
                nonce = query.get("nonce", "")
                if not (signature and timestamp and nonce):
                    raise _missing(_SIGNED, (signature, timestamp, nonce))
                raw = await _read_body(request, limit)
                received_at = clock.now()
                received = received_at.timestamp()
                self._check_timestamp(timestamp, received)
                plaintext = crypto.decrypt(
                    _encrypted_field(raw, json_body), signature, timestamp, nonce
                )
                # As text and as UTF-8: the journal stores the one, the robot's admit reads it
                # too. wechatpy decoded it strictly, so it encodes (no lone surrogates).
                data = plaintext.encode()
                try:
                    admitted = admit(plaintext, data, received_at)
                except DoorFormatError as exc:
                    raise CallbackRejectedError(400, f"unusable payload: {exc}") from None
            except CallbackRejectedError as exc:
                return _reject(door.door, exc)
            try:
                if journalled:
                    self.writer.append(door_value, namespace, admitted.key, data, received)
                    new = True  # a duplicate is dropped when the journal reaches the table
                else:
                    item = inbox.Incoming(
                        door_value, namespace, admitted.key, store_form(plaintext, received_at)
                    )
                    new = await self.writer.store(item)
            except Exception:
                # Not stored, so not acknowledged: WeCom will try again.
                CALLBACKS.inc(door=door.door.value, status="503")
                return web.Response(status=503, text="inbox unavailable")
            if new:
                self.worker.wake()
                if admitted.event == "msgaudit_notify":
                    for wake in self.on_msgaudit_notify:
                        wake()
            CALLBACKS.inc_values(door.ok_labels)
            return web.Response(text="")

        return verify, receive

    # -- health

    async def healthz(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.StreamResponse:
        problems = []
        try:
            current = await asyncio.to_thread(self._current_heads)
            if current != self._heads:
                problems.append("migrations not applied")
        except Exception as exc:
            problems.append(f"database unreachable ({type(exc).__name__})")
        if self._worker_task is None or self._worker_task.done():
            problems.append("inbox worker not running")
        if not self.writer.running:
            problems.append("inbox writer not running")
        if problems:
            return web.json_response({"status": "unavailable", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    def _current_heads(self) -> set[str]:
        with self.bot.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            return set(MigrationContext.configure(conn).get_current_heads())


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, or 413 past ``limit`` bytes (without reading on) and 400 when the
    connection breaks. ``read(n)`` returns what has arrived, so a body split across TCP segments
    takes several reads; usually the whole body arrived with the headers, and is taken as it is."""
    expected = request.content_length
    if expected is not None and expected > limit:
        raise CallbackRejectedError(413, "body too large")
    content = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        if expected is not None:
            arrived = content.read_nowait(expected)
            if len(arrived) == expected:
                return arrived
            chunks.append(arrived)
            size = len(arrived)
        while chunk := await content.read(limit + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise CallbackRejectedError(413, "body too large")
            if size == expected:
                break  # all of it: no read for the end of the stream
    except CallbackRejectedError:
        raise
    except Exception:
        raise CallbackRejectedError(400, "unreadable body") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _missing(names: Sequence[str], values: Sequence[str]) -> CallbackRejectedError:
    missing = [n for n, v in zip(names, values, strict=True) if not v]
    return CallbackRejectedError(400, f"missing query parameter(s): {', '.join(missing)}")


_SIGNED = ("msg_signature", "timestamp", "nonce")


def _encrypted_field(raw: bytes, json_body: bool) -> str:
    if json_body:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise CallbackRejectedError(400, "body is not JSON") from None
        value = body.get("encrypt") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise CallbackRejectedError(400, 'JSON body without a string "encrypt"')
        return value
    root = parse_xml(raw)
    value = root.get("Encrypt")
    if not isinstance(value, str) or not value:
        raise CallbackRejectedError(400, "XML body without <Encrypt>")
    return value


def _reject(door: Door, exc: CallbackRejectedError) -> web.Response:
    CALLBACKS.inc(door=door.value, status=str(exc.status))
    log.info("%s callback refused (%d): %s", door.value, exc.status, exc.reason)
    return web.Response(status=exc.status, text=exc.reason)


class _AibotPush:
    """The delivery worker's AI-bot pusher over the long connection (which pushes markdown;
    plain text is valid markdown)."""

    def __init__(self, connection: AibotConnection) -> None:
        self.connection = connection

    async def push(self, chat_id: str, msgtype: str, content: str) -> None:
        await self.connection.push(chat_id, content)


def create_app(
    bot: App,
    env: Mapping[str, str] | None = None,
    archive_source: ArchiveSource | None = None,
    with_scheduler: bool = True,
    with_delivery: bool = True,
) -> web.Application:
    """The aiohttp application for ``bot``: the callback doors, health, ``/metrics``, the
    dashboard at ``/dashboard/`` and the scheduler's lifecycle. Door secrets come from ``env``
    (default os.environ); ``archive_source`` replaces the native archive SDK (tests, demo).
    ``with_scheduler``/``with_delivery`` False leave the jobs and the outbox to the caller (the
    demo drives both by its manual clock)."""
    server = Server(bot, env, archive_source, with_delivery)
    # aiohttp's own limit is a backstop; the routes answer 413 themselves.
    app = web.Application(client_max_size=server.settings.max_body_bytes + 1024)
    app[SERVER_KEY] = server
    for door in server.doors:
        verify, receive = server.handlers(door)
        path = getattr(server.settings, door.door.value).path
        app.router.add_get(path, verify)
        app.router.add_post(path, receive)
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/readyz", server.readyz)
    app.add_routes(
        metrics_routes(
            inbox_collector(bot.db, bot.clock, server.writer.journal),
            lambda: queue_length_collector(bot.db),
        )
    )
    app.add_subapp("/dashboard/", build_dashboard(bot, env))
    app.on_startup.append(server.start)
    app.on_cleanup.append(server.stop)
    if with_scheduler and bot.settings.rhythm.enabled:
        scheduler = CohortScheduler(bot)

        async def start_scheduler(_app: web.Application) -> None:
            scheduler.start()  # needs the running loop

        async def stop_scheduler(_app: web.Application) -> None:
            scheduler.shutdown()

        app.on_startup.append(start_scheduler)
        app.on_cleanup.append(stop_scheduler)
    return app


SERVER_KEY = web.AppKey("server", Server)


async def serve(bot: App, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``); print the address once listening."""
    app = create_app(bot)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()  # a port in use raises here; the background tasks still stop
        # Everything loaded so far lives as long as the process: move it out of the collector's
        # reach, so that a full collection walks only what was allocated since (see the module
        # doc). Only once listening: a start that fails leaves the collector as it was.
        gc.collect()
        gc.freeze()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        bound = runner.addresses[0]
        print(f"cohortbot listening on http://{bound[0]}:{bound[1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
