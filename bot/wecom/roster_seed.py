"""Roster seeding: the members of each configured group, from WeCom, before anyone speaks.

When a group is first configured (it has no memberships yet) the customer-group detail API
(``externalcontact/groupchat/get``, path/92122) lists its members with join time and join scene;
they become members and memberships, so a learner who never writes a word is known (and counted
as silent) from day one. Later changes arrive as ``change_external_chat`` events (inbound door).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.wecom.api import ApiError, WeComAPI
from storage import roster
from storage.db import Database

log = logging.getLogger(__name__)

#: ``member_list[].type`` in path/92122.
INTERNAL_TYPE = 1


@dataclass
class SeedReport:
    """Per group: how many members were seeded, which groups were skipped, what failed."""

    seeded: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # already had memberships
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{chat}: 导入 {n} 名成员" for chat, n in self.seeded.items()]
        lines += [f"{chat}: 已有成员名单，跳过" for chat in self.skipped]
        lines += [f"{chat}: 失败 {error}" for chat, error in self.errors.items()]
        return "\n".join(lines) or "没有配置群"


def _has_memberships(db: Database, chat_id: str) -> bool:
    with db.session() as session:
        count = session.scalar(
            select(func.count())
            .select_from(roster.Membership)
            .where(col(roster.Membership.chat_id) == chat_id)
        )
    return bool(count)


async def seed_rosters(
    settings: Settings,
    db: Database,
    api: WeComAPI,
    clock: Clock | None = None,
    *,
    force: bool = False,
) -> SeedReport:
    """Seed every configured group that has no memberships yet (all of them with ``force``).

    A group the API cannot describe (not a customer group, a network error) is reported and
    left for the next run; the other groups are still seeded.
    """
    clock = clock or SystemClock()
    report = SeedReport()
    for cohort in settings.cohorts:
        for group in cohort.groups:
            chat_id = group.chat_id
            if not force and _has_memberships(db, chat_id):
                report.skipped.append(chat_id)
                continue
            try:
                detail = await api.groupchat_get(chat_id)
            except ApiError as exc:
                log.warning("roster seed %s: %s", chat_id, exc)
                report.errors[chat_id] = str(exc)
                continue
            async with db.unit_of_work() as uow:
                report.seeded[chat_id] = store_group_detail(uow.session, chat_id, detail, clock)
    return report


def store_group_detail(session: Session, chat_id: str, detail: dict[str, Any], clock: Clock) -> int:
    """Write one ``group_chat`` answer as members and memberships; return the member count.

    The owner of an external member (who sends them ``add_msg_template`` tasks) is the staff
    member who invited them when the API says so (``invitor`` is only given for internal
    inviters), else the group's owner; a known owner is never overwritten.
    """
    members = [m for m in detail.get("member_list", []) if isinstance(m, dict) and m.get("userid")]
    group_owner = str(detail.get("owner", ""))
    now = clock.now()
    roster.ensure_members(
        session,
        [
            (
                str(m["userid"]),
                str(m.get("group_nickname") or m.get("name") or ""),
                "internal" if m.get("type") == INTERNAL_TYPE else "external",
            )
            for m in members
        ],
        now,
    )
    owners: dict[str, str] = {}
    for m in members:
        if m.get("type") == INTERNAL_TYPE:
            continue
        invitor = m.get("invitor")
        owner = invitor.get("userid") if isinstance(invitor, dict) else None
        if owner or group_owner:
            owners[str(m["userid"])] = str(owner or group_owner)
    roster.set_owners(session, owners)
    for m in members:
        joined = m.get("join_time")
        at = datetime.fromtimestamp(int(joined), UTC) if joined else now
        scene = m.get("join_scene")
        roster.record_join(
            session, chat_id, str(m["userid"]), at, int(scene) if scene is not None else None
        )
    return len(members)
