"""The demo's simulated world (SPEC §16): the real server on loopback, the built-in fake WeCom
API, and 28 cohort days driven by a manual clock.

What goes in is what WeCom would send: group chat arrives as archive items that the archive
poller pulls after a genuine, encrypted ``msgaudit_notify`` app callback; messages that @ the
bot arrive as encrypted group-robot callbacks; the late joiners arrive as
``change_external_chat`` app callbacks. Rosters are seeded from the fake's customer-group API.
The scheduler's jobs (kick-off, agendas, topics, games, evening wrap, nudges, digests) fire as
the clock advances; everything the bot says goes through the outbox to the fake WeCom, where
:class:`World` reads it back (a comeback learner returns the day after their nudge arrived).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import App
from bot.cards.member import card_for
from bot.clock import ManualClock
from bot.config import Settings
from bot.demo import cohort
from bot.demo.cohort import Person, Said
from bot.doors.archive_poller import items_after
from bot.doors.crypto import DoorCrypto
from bot.scheduler import CohortScheduler
from bot.server import SERVER_KEY, Server, create_app
from bot.simulate import app_member_change_xml, app_msgaudit_notify_xml, post_callback, robot_xml
from bot.wecom.api import client_from_settings
from bot.wecom.delivery import DeliveryWorker
from bot.wecom.fake_server import FakeWeCom
from bot.wecom.roster_seed import seed_rosters
from bot.wecom.sender import OutboxSender
from storage import inbox

#: The demo's made-up secrets (never real ones): door tokens and keys, the app secret, robots.
DOOR_TOKEN = "cohortbotDemoToken"
DOOR_KEY = "cohortbotDemoEncodingAESKey0123456789abcdef"
ENV = {
    "COHORTBOT_AIBOT_TOKEN": DOOR_TOKEN,
    "COHORTBOT_AIBOT_AES_KEY": DOOR_KEY,
    "COHORTBOT_ROBOT_TOKEN": DOOR_TOKEN,
    "COHORTBOT_ROBOT_AES_KEY": DOOR_KEY,
    "COHORTBOT_APP_TOKEN": DOOR_TOKEN,
    "COHORTBOT_APP_AES_KEY": DOOR_KEY,
    "DEMO_WECOM_SECRET": "demo-app-secret",
    "DEMO_ROBOT_KEY_A": "demo-robot-a",
    "DEMO_ROBOT_KEY_B": "demo-robot-b",
}
TEMPLATE_PATH = "/cgi-bin/externalcontact/add_msg_template"
SETTLE_LIMIT_S = 30.0


class DemoArchive:
    """The archive as the demo's source (the :class:`~bot.doors.archive_poller.ArchiveSource`
    the native SDK would be): items are appended as people speak, with increasing seq."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    @property
    def last_seq(self) -> int:
        return len(self.items)

    def append(self, said: Said, msgid: str) -> None:
        self.items.append(
            {
                "seq": len(self.items) + 1,
                "msgid": msgid,
                "action": "send",
                "from": said.who.id,
                "tolist": [],
                "roomid": said.who.chat_id,
                "msgtime": int(said.at.timestamp() * 1000),
                "msgtype": "text",
                "text": {"content": said.text},
            }
        )

    async def fetch(self, seq: int, limit: int) -> list[dict[str, Any]]:
        return items_after(self.items, seq, limit)


@dataclass
class Tally:
    """What the world saw, for the final report."""

    archive_items: int = 0
    callbacks: int = 0
    rejected: list[str] = field(default_factory=list)
    scheduled_runs: int = 0
    nudged: dict[str, int] = field(default_factory=dict)  # learner -> cohort day reached
    seeded: int = 0


class World:
    """One demo run: ``async with World(settings, clock) as world: await world.live(days)``."""

    def __init__(self, settings: Settings, clock: ManualClock) -> None:
        self.settings = settings
        self.clock = clock
        self.fake = FakeWeCom(
            corp_id=settings.wecom.corp_id, secret=ENV["DEMO_WECOM_SECRET"], clock=clock
        )
        self.archive = DemoArchive()
        self.tally = Tally()
        self.robot = DoorCrypto(DOOR_TOKEN, DOOR_KEY, "")
        self.app_door = DoorCrypto(DOOR_TOKEN, DOOR_KEY, settings.server.corp_id)
        self._serial = 0
        self._next_due: datetime | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> World:
        async with contextlib.AsyncExitStack() as stack:
            for group in self.settings.cohorts[0].groups:
                founders = self._founders(group.chat_id)
                self.fake.add_groupchat(group.chat_id, group.name, cohort.TEACHER, founders)
            url = await stack.enter_async_context(self.fake.serve())
            settings = self.settings = _with_api_base(self.settings, url)
            self.bot = App.open(
                settings,
                clock=self.clock,
                sender=OutboxSender(settings, self.clock),
                card_maker=card_for,
            )
            stack.callback(self.bot.close)
            self.api = client_from_settings(settings, self.clock, ENV)
            stack.push_async_callback(self.api.close)
            self.delivery = DeliveryWorker(settings, self.bot.db, self.api, self.clock, env=ENV)
            # The demo runs the jobs and the outbox itself, by its manual clock.
            self.web = create_app(
                self.bot, ENV, self.archive, with_scheduler=False, with_delivery=False
            )
            self.server: Server = self.web[SERVER_KEY]
            runner = web.AppRunner(self.web, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            self.base = f"http://{host}:{port}"
            self.http = await stack.enter_async_context(aiohttp.ClientSession())
            self.scheduler = CohortScheduler(self.bot)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    # -- the story -------------------------------------------------------------------------

    async def live(self, days: int) -> None:
        """Seed the rosters, then live ``days`` cohort days, hour by hour."""
        report = await seed_rosters(self.settings, self.bot.db, self.api, self.clock)
        self.tally.seeded = sum(report.seeded.values())
        for day in range(1, days + 1):
            plan = cohort.day_plan(day, self.tally.nudged)
            if day == cohort.LATE_DAY:
                await self._advance(cohort.local(day, 9))
                await self._late_joiners_arrive(day)
            by_hour: dict[datetime, list[Said]] = {}
            for said in plan:
                by_hour.setdefault(said.at.replace(minute=0, second=0), []).append(said)
            for hour in sorted(by_hour):
                await self._advance(hour)
                await self._speak(by_hour[hour])
            # The rest of the learning day: evening jobs, nudges and the digest (it ends 04:00);
            # the last day stops at 02:00, so the report shows that day.
            await self._advance(cohort.local(day + 1, 4) if day < days else cohort.local(day, 26))

    def _founders(self, chat_id: str) -> list[dict[str, Any]]:
        """The customer-group detail the fake serves before anyone late has joined."""
        joined = int(cohort.local(1, 8).timestamp())
        members: list[dict[str, Any]] = [
            {
                "userid": cohort.TEACHER,
                "type": 1,
                "join_time": joined,
                "join_scene": 1,
                "name": "王老师",
            }
        ]
        for person in cohort.EVERYONE:
            if person.chat_id == chat_id and cohort.joins_on(person) == 1:
                members.append(_member(person, joined))
        return members

    async def _advance(self, until: datetime) -> None:
        """Move the clock to ``until``, stopping wherever the scheduler has something due: run
        it, let the bot catch up and deliver what it queued (at that moment, so quiet hours
        and rate limits see the right time)."""
        while self.clock.now() < until:
            nxt = await self.scheduler.next_fire_time(self.clock.now())
            step = until if nxt is None or nxt > until else nxt
            self.clock.set(max(step, self.clock.now()))
            self.tally.scheduled_runs += await self.scheduler.run_due(self.clock.now())
            await self._settle()

    async def _speak(self, said: list[Said]) -> None:
        """One hour's messages: the archive gets the chat, the robot door the @bot messages.
        A job due before a message runs first (with the archive pulled up to that moment)."""
        notify = False
        for s in said:
            self._serial += 1
            msgid = f"demo{self._serial:06d}"
            if self._next_due is not None and s.at >= self._next_due:
                if notify:
                    await self._notify_archive()
                    notify = False
                await self._advance(s.at)
            self.clock.set(max(s.at, self.clock.now()))
            if s.to_bot:
                xml = robot_xml(s.who.chat_id, s.who.id, s.text, msgid, s.who.name)
                await self._callback("robot", xml)
            else:
                self.archive.append(s, msgid)
                self.tally.archive_items += 1
                notify = True
        if notify:
            await self._notify_archive()
        await self._settle()

    async def _notify_archive(self) -> None:
        """New archive data: WeCom's ``msgaudit_notify`` app callback wakes the poller."""
        ts = int(self.clock.now().timestamp())
        await self._callback("app", app_msgaudit_notify_xml(self.settings.server.corp_id, ts))
        await self._settle()

    async def _late_joiners_arrive(self, day: int) -> None:
        late = [p for p in cohort.LEARNERS if cohort.joins_on(p) == day]
        for chat_id in cohort.GROUPS.values():
            joining = [p for p in late if p.chat_id == chat_id]
            if not joining:
                continue
            ts = int(self.clock.now().timestamp())
            self.fake.groupchats[chat_id].members.extend(_member(p, ts) for p in joining)
            xml = app_member_change_xml(
                self.settings.server.corp_id, chat_id, "add_member", [p.id for p in joining], ts, 3
            )
            await self._callback("app", xml)
        await self._settle()
        # Join events carry ids only: the operator refreshes the rosters for their names
        # (`cohortbot roster seed --force`) before the batched welcome goes out.
        await seed_rosters(self.settings, self.bot.db, self.api, self.clock, force=True)

    async def _callback(self, door: str, plaintext: str) -> None:
        crypto = self.robot if door == "robot" else self.app_door
        path = getattr(self.settings.server, door).path
        status, body = await post_callback(
            self.http,
            self.base + path,
            crypto,
            plaintext,
            json_body=False,
            timestamp=int(self.clock.now().timestamp()),
        )
        self.tally.callbacks += 1
        if status != 200:
            self.tally.rejected.append(f"{door} {status} {body[:80]}")

    async def _settle(self) -> None:
        """Wait until the poller has pulled everything, the inbox is processed and the outbox
        delivered; then note who received a nudge."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_LIMIT_S
        poller = self.server.archive
        while True:
            pulled = poller is None or await poller.last_seq() >= self.archive.last_seq
            await self.server.flush_journal()  # answered callbacks into the inbox table
            if pulled and not self._unprocessed():
                break
            if loop.time() > deadline:
                raise TimeoutError("the demo bot did not catch up within 30 s")
            await asyncio.sleep(0.005)
        await self.delivery.drain(pause=0.01)
        self._note_nudges()
        self._next_due = await self.scheduler.next_fire_time(self.clock.now())

    def _unprocessed(self) -> bool:
        with self.bot.db.session() as s:
            return inbox.oldest_pending_at(s) is not None

    def _note_nudges(self) -> None:
        day = self._cohort_day()
        for body in self.fake.delivered_to(TEMPLATE_PATH):
            for member in body.get("external_userid", []):
                self.tally.nudged.setdefault(member, day)

    def _cohort_day(self) -> int:
        c = self.settings.cohorts[0]
        local = self.clock.now().astimezone(c.timezone) - timedelta(hours=c.day_start_hour)
        return (local.date() - c.start_date).days + 1


def _member(person: Person, joined: int) -> dict[str, Any]:
    return {
        "userid": person.id,
        "type": 1 if person.persona == "leader" else 2,
        "join_time": joined,
        "join_scene": 3 if person.persona == "late" else 1,
        "name": person.name,
        "invitor": {"userid": cohort.TEACHER},
    }


def _with_api_base(settings: Settings, url: str) -> Settings:
    from dataclasses import replace

    return replace(settings, wecom=replace(settings.wecom, api_base=url))
