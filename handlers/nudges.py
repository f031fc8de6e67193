"""Private nudges (SPEC §8): choosing a script for a flagged learner, timing (nudge windows,
quiet hours, spread away from :00 and :30, one per learner per 3 days, WeCom's per-customer
limit), opt-out, the offers ladder with teacher approval, effectiveness, and the leader commands
``阶段`` and ``潜水``.

The jobs take their "now" from the app's clock; the scheduler (issue 5) registers them:
:func:`nudge_job` (plan and send; every 15-30 minutes), :func:`nudge_send_job` (send what is due;
cheap, every minute or at :func:`next_nudge_due`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy.orm import Session

from bot.clock import day_start, learning_day
from bot.config import CohortSettings, GroupSettings, NudgeSettings, OfferTier, Settings
from bot.context import Context
from bot.jobs import CohortFilter, DailyJob, Run, cohort_job
from bot.metrics import NUDGES_SENT
from bot.outbound import Channel, Outbound
from bot.radar import (
    SIGNAL_LABELS,
    STAGE_LABELS,
    GroupRadar,
    MemberRisk,
    Signal,
    Stage,
    evaluate,
    parse_stage,
)
from bot.updates import Update
from handlers.commands import Call, CommandSet, Role, UsageError, reply, role_of
from scripts_library import nudges as library
from storage import checkins, cohort_dates, milestones, points, roster, schedule
from storage import nudges as store
from storage import radar as radar_store
from storage.nudges import Nudge, Offer

if TYPE_CHECKING:
    from bot.app import App

commands = CommandSet("nudges")

APP_MESSAGE = "app_message"
MSG_TEMPLATE = "add_msg_template"
NO_ROUTE = "none"


# --- seams for other issues ------------------------------------------------------------------


def points_balance(session: Session, cohort_id: str, member_id: str) -> int:
    """A learner's ledger balance, for ``{points}``."""
    return points.balance(session, cohort_id, member_id)


# --- delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How a private message reaches a member.

    ``app_message``: an app message to an internal member (企业微信 message/send).
    ``add_msg_template``: a 群发 task created for the owning staff member, who must confirm it
    (客户联系 externalcontact/add_msg_template, ``chat_type=single``, ``sender`` = the owner).
    ``none``: no way to reach them privately; the nudge is only listed in the digest.
    """

    kind: str
    to: str
    sender: str | None = None
    reason: str = ""


def delivery_route(member_id: str, kind: str, owner_userid: str | None) -> Route:
    """Pick the delivery for a member by kind: app message for internal members, an
    ``add_msg_template`` task through the owning staff member for external learners."""
    if kind == "internal":
        return Route(APP_MESSAGE, member_id)
    if owner_userid:
        return Route(MSG_TEMPLATE, member_id, sender=owner_userid)
    return Route(NO_ROUTE, member_id, reason="没有归属员工，无法私信，仅列入摘要")


# --- timing ----------------------------------------------------------------------------------


def _t(hm: tuple[int, int]) -> time:
    return time(23, 59, 59) if hm[0] >= 24 else time(hm[0], hm[1])


def window_of(local: datetime, ns: NudgeSettings) -> tuple[time, time]:
    """Today's nudge window (weekdays vs weekends) in local time."""
    start, end = ns.weekday_window if local.weekday() < 5 else ns.weekend_window
    return _t(start), _t(end)


def in_quiet_hours(local: datetime, ns: NudgeSettings) -> bool:
    start, end = _t(ns.quiet_hours[0]), _t(ns.quiet_hours[1])
    now = local.time()
    if start <= end:
        return start <= now < end
    return now >= start or now < end


def may_send_at(local: datetime, ns: NudgeSettings) -> bool:
    """Inside today's nudge window and outside quiet hours."""
    start, end = window_of(local, ns)
    return start <= local.time() < end and not in_quiet_hours(local, ns)


def _spread_ok(minute: int) -> bool:
    """Keep away from the :00 and :30 bursts (two minutes either side)."""
    return minute % 30 not in (28, 29, 0, 1, 2)


def pick_send_time(
    local_now: datetime, ns: NudgeSettings, seed: str, slots: list[datetime] | None = None
) -> datetime:
    """A send time in the rest of today's window, at a minute away from :00/:30, spread
    deterministically by ``seed`` (so learners do not all get their nudge at once).
    ``slots``: :func:`send_slots` of the same ``local_now``, when the caller has them."""
    if slots is None:
        slots = send_slots(local_now, ns)
    if not slots:
        return local_now
    h = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    return slots[h % len(slots)]


def send_slots(local_now: datetime, ns: NudgeSettings) -> list[datetime]:
    """The minutes :func:`pick_send_time` chooses from, in order."""
    start, end = window_of(local_now, ns)
    day = local_now.date()
    tz = local_now.tzinfo
    lo = max(
        local_now.replace(second=0, microsecond=0) + timedelta(minutes=1),
        datetime.combine(day, start, tz),
    )
    hi = datetime.combine(day, end, tz)
    slots = []
    t = lo
    while t < hi:
        if _spread_ok(t.minute) and not in_quiet_hours(t, ns):
            slots.append(t)
        t += timedelta(minutes=1)
    return slots


# --- choosing --------------------------------------------------------------------------------


class Standing(NamedTuple):
    """Where a learner stands towards the milestones: the count milestones go by (the streak,
    or the check-in days in all under ``[streaks] milestone_basis = "total"``) and the milestone
    days they already have a badge for."""

    value: int
    earned: frozenset[int] = frozenset()

    def next(self, cohort: CohortSettings) -> int | None:
        return next_milestone(cohort, self.value, self.earned)


def standings(
    session: Session, settings: Settings, cohort: CohortSettings
) -> Callable[[MemberRisk], Standing]:
    """Each learner's :class:`Standing` in ``cohort``: the badges (and, under the total basis,
    the check-in days) read once for the whole cohort."""
    earned = milestones.earned_by_member(session, cohort.id)
    totals = (
        checkins.totals_by_member(session, cohort)
        if settings.streaks.milestone_basis == "total"
        else None
    )

    def standing(risk: MemberRisk) -> Standing:
        value = risk.streak if totals is None else totals.get(risk.member_id, 0)
        return Standing(value, earned.get(risk.member_id, frozenset()))

    return standing


def scenarios_for(
    risk: MemberRisk,
    cohort: CohortSettings,
    today: date,
    postcards: bool,
    standing: Standing | None = None,
) -> list[str]:
    """The scenarios worth a script for this learner, best first (stage x signals x risk);
    ``standing``: towards the milestones (default: the streak, no badges)."""
    standing = standing or Standing(risk.streak)
    nxt = standing.next(cohort)
    near = standing.value > 0 and nxt is not None and nxt - standing.value <= 2
    return list(
        scenarios_of(
            frozenset([f.signal for f in risk.fired]),
            risk.stage,
            risk.level,
            near,
            risk.holding,
            today.weekday() >= 5,
            postcards,
            never_spoke(risk, cohort, today),
        )
    )


def never_spoke(risk: MemberRisk, cohort: CohortSettings, today: date) -> bool:
    """Whether the learner has said nothing since joining the cohort (or since its start): the
    radar's days quiet then cover every day they have been in it."""
    joined = risk.joined_day if risk.joined_day and risk.joined_day > cohort.start_date else None
    present = (today - (joined or cohort.start_date)).days + 1
    return present > 0 and risk.days_quiet >= present


@lru_cache(maxsize=4096)
def scenarios_of(
    s: frozenset[Signal],
    stage: Stage,
    level: int,
    milestone_near: bool,
    holding: bool,
    weekend: bool,
    postcards: bool,
    silent_throughout: bool = False,
) -> tuple[str, ...]:
    """:func:`scenarios_for` from the few facts it depends on (a digest asks for 60,000
    learners; their combinations number in the hundreds). ``silent_throughout``: the learner
    never spoke (:func:`never_spoke`)."""
    out: list[str] = []
    if stage is Stage.AFTER:
        out += ["reactivation", "next_cohort"]
    if level >= 3:
        out.append("high_risk_care")
    if Signal.IGNORED_NUDGE in s:
        out.append("ignored_nudge")
    if silent_throughout and Signal.SILENCE in s:
        # Only scripts that assume no participation: not the stage pushes ("你前面打下的基础很扎
        # 实"), nor broken streaks or missed check-ins of someone who never checked in.
        out += ["never_spoken", "long_silence"]
        if postcards:
            out.append("knowledge_postcard")
        return tuple(dict.fromkeys(out))
    # A missing introduction matters most in the first week; later, for a learner who does
    # speak, it ranks after their streak, milestone and volume (below).
    early = stage in (Stage.NEWCOMER, Stage.ADAPTING)
    if Signal.NO_INTRO in s and early:
        out.append("no_intro")
    if Signal.SILENCE in s:
        stage_specific = {
            Stage.ADAPTING: "slump",
            Stage.SPRINT: "sprint_push",
            Stage.CLOSING: "closing_wrapup",
        }.get(stage)
        if stage_specific:
            out.append(stage_specific)
        out.append("long_silence")
    if Signal.STREAK_BROKEN in s:
        out.append("broken_streak")
    if Signal.NO_CHECKIN in s:
        out.append("missed_checkins")
    if milestone_near:
        out.append("milestone_near")
    if Signal.CHECKIN_DROP in s:
        out.append("checkin_drop")
    if Signal.VOLUME_DROP in s:
        out.append("volume_drop")
    if Signal.LOW_PROGRESS in s:
        out += ["low_progress", "homework_missing"]
    if Signal.NO_INTRO in s and not early:
        out.append("no_intro")
    if holding:
        out.append("after_leave")
    if weekend:
        out.append("weekend_catchup")
    if stage in (Stage.ADVANCING, Stage.SPRINT):
        out.append("low_reviews")
    out += ["long_silence", "missed_checkins"]
    if postcards:
        out.append("knowledge_postcard")
    return tuple(dict.fromkeys(out))


def next_milestone(
    cohort: CohortSettings, value: int, earned: frozenset[int] = frozenset()
) -> int | None:
    """The next milestone above ``value`` that the learner has no badge for yet (a badge is
    earned once: after a broken streak, "2 days to the 7-day milestone" would promise nothing)."""
    return _next_of(cohort.milestone_days, value, earned)


@lru_cache(maxsize=1024)
def _next_of(days: tuple[int, ...], value: int, earned: frozenset[int]) -> int | None:
    return next((m for m in days if m > value and m not in earned), None)


class Choice(NamedTuple):
    """The script variant chosen for a learner and its rendered text (a named tuple: a digest
    builds 60,000 of them)."""

    script: library.Script
    variant: int
    text: str
    postcard: int | None


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@lru_cache(maxsize=4096)
def _scripts_for(scenarios: tuple[str, ...], stage: str, level: int) -> tuple[library.Script, ...]:
    """The candidate scripts of these scenarios, in order (few distinct keys per day)."""
    return tuple(s for scenario in scenarios for s in library.candidates(scenario, stage, level))


def choose(
    scenarios: list[str],
    stage: str,
    level: int,
    values: dict[str, object],
    used: set[tuple[str, int]],
    used_hashes: set[str],
    postcards: tuple[str, ...],
    used_postcards: set[int],
    seed: str,
) -> Choice | None:
    """The first script variant for these scenarios this learner has never received."""
    free_cards = [i for i in range(len(postcards)) if i not in used_postcards]
    rot = rotation(seed)
    for script in _scripts_for(tuple(scenarios), stage, level):
        n = len(script.variants)
        for k in range(n):
            v = (k + rot) % n
            if used and (script.id, v) in used:
                continue
            template = library.compiled(script.variants[v])
            card = None
            vals = values
            if "postcard" in template.fields:
                if not free_cards:
                    continue
                card = free_cards[0]
                vals = {**values, "postcard": postcards[card]}
            if any(name not in vals or vals[name] in (None, "") for name in template.fields):
                continue
            text = template.render(vals)
            if used_hashes and text_hash(text) in used_hashes:
                continue
            return Choice(script, v, text, card)
    return None


def rotation(seed: str) -> int:
    """Where :func:`choose` starts in a script's variants for this seed (first 6 hex digits of
    its SHA-256)."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:3])


@lru_cache(maxsize=4096)
def first_usable(
    scenarios: tuple[str, ...], stage: str, level: int, present: frozenset[str], card: bool
) -> tuple[library.Script, tuple[library.Template | None, ...]] | None:
    """For a learner with no history (nothing used), the script :func:`choose` picks: the first
    candidate with a variant whose fields all have a value (``present``: the value names that
    are neither None nor empty; ``card``: a postcard can be filled in), and its variants'
    templates, None for a variant that cannot be filled. :func:`choose` then takes the first
    usable variant from the learner's :func:`rotation`."""
    for script in _scripts_for(scenarios, stage, level):
        usable: list[library.Template | None] = []
        for variant in script.variants:
            template = library.compiled(variant)
            filled = all(
                (card if name == "postcard" else name in present) for name in template.fields
            )
            usable.append(template if filled else None)
        if any(t is not None for t in usable):
            return script, tuple(usable)
    return None


# --- the jobs --------------------------------------------------------------------------------


_GROUPS: dict[int, tuple[CohortSettings, dict[str, GroupSettings]]] = {}


def group_of(cohort: CohortSettings, chat_id: str) -> GroupSettings | None:
    """A cohort's group by chat id (a dict lookup: digests ask this once per learner). Keyed by
    identity: hashing a cohort with 1,000 groups on every call would cost more than the scan."""
    entry = _GROUPS.get(id(cohort))
    if entry is None or entry[0] is not cohort:
        entry = _GROUPS[id(cohort)] = (cohort, {g.chat_id: g for g in cohort.groups})
    return entry[1].get(chat_id)


def _teacher_name(session: Session, cohort: CohortSettings, chat_id: str) -> str:
    group = group_of(cohort, chat_id)
    if group is None or not group.teachers:
        return "老师"
    return roster.names(session, [group.teachers[0]]).get(group.teachers[0], "老师") or "老师"


def days_left(cohort: CohortSettings, today: date) -> int:
    """Learning days left in the cohort, today included ("还剩1天" on the last day), 0 after."""
    return cohort.days_left(today)


def _teacher_names(
    session: Session, cohort: CohortSettings, chat_ids: Iterable[str]
) -> dict[str, str]:
    """:func:`_teacher_name` of many groups, in one query."""
    first = {
        c: (g.teachers[0] if g and g.teachers else None)
        for c in chat_ids
        for g in [group_of(cohort, c)]
    }
    names = roster.names(session, [t for t in first.values() if t is not None])
    return {
        c: (names.get(t, "老师") or "老师") if t is not None else "老师" for c, t in first.items()
    }


def values_for(
    session: Session,
    cohort: CohortSettings,
    risk: MemberRisk,
    today: date,
    teacher: str,
    balance: int | None = None,
    standing: Standing | None = None,
) -> dict[str, object]:
    """The placeholder values for one learner (user data, rendered literally). ``balance``: the
    learner's points when the caller read them already (in bulk); ``standing``: towards the
    milestones (default: the streak, no badges)."""
    standing = standing or Standing(risk.streak)
    nxt = standing.next(cohort)
    if balance is None:
        balance = points_balance(session, cohort.id, risk.member_id)
    values: dict[str, object] = {
        "name": risk.name,
        "days_quiet": risk.days_quiet,
        "streak": risk.streak,
        "points": balance or None,  # no script says "你已经有0积分了"
        **group_values(cohort, risk.chat_id, today, teacher),
        "stage": STAGE_LABELS[risk.stage],
    }
    if nxt is not None:
        values["next_milestone"] = nxt
        values["days_to_milestone"] = nxt - standing.value
    return values


_GROUP_VALUES: dict[tuple[int, str, date, str], tuple[CohortSettings, dict[str, object]]] = {}


def group_values(
    cohort: CohortSettings, chat_id: str, today: date, teacher: str
) -> dict[str, object]:
    """The placeholder values every learner of a group shares on a day (a digest asks for
    60,000 learners); keyed by the cohort's identity, as :func:`group_of` is."""
    key = (id(cohort), chat_id, today, teacher)
    entry = _GROUP_VALUES.get(key)
    if entry is None or entry[0] is not cohort:
        if len(_GROUP_VALUES) > 20_000:
            _GROUP_VALUES.clear()
        group = group_of(cohort, chat_id)
        values: dict[str, object] = {
            "course": cohort.course,
            "teacher": teacher,
            "cohort_day": max(1, cohort.cohort_day(today)),
            "days_left": days_left(cohort, today),
            "group": group.name if group and group.name else cohort.course,
        }
        entry = _GROUP_VALUES[key] = (cohort, values)
    return entry[1]


def plan_nudges(
    session: Session, settings: Settings, cohort: CohortSettings, now: datetime
) -> list[Nudge]:
    """Plan today's nudges for a cohort's flagged learners (idempotent per learner and day),
    and propose offers by risk level. Returns the nudges planned now."""
    ns = settings.nudges
    today = learning_day(now, cohort.timezone, cohort.day_start_hour)
    local = now.astimezone(cohort.timezone)
    chat_ids = [g.chat_id for g in cohort.groups]
    radar = evaluate(session, settings, cohort, chat_ids, today)
    lapse_offers(session, radar, now)
    flagged = [m for g in radar.values() for m in g.flagged]
    if not flagged:
        return []
    ids = [m.member_id for m in flagged]
    out_of = store.opted_out(session, ids)
    last = store.last_nudge_day(session, ids)
    # Everything the loop needs per learner, read for all of them at once.
    offers = store.offers_by_member(session, ids, cohort.id)
    history = store.histories(session, ids)
    balances = points.balances_of(session, cohort.id, ids)
    standing_of = standings(session, settings, cohort)
    teachers = _teacher_names(session, cohort, {m.chat_id for m in flagged})
    slots = send_slots(local, ns)
    planned: list[Nudge] = []
    for risk in flagged:
        if risk.member_id in out_of:
            continue
        offer = next_offer(cohort, risk, now, ns.offers, offers[risk.member_id])
        if offer is not None:
            session.add(offer)
            offers[risk.member_id].append(offer)
        prev = last.get(risk.member_id)
        if prev is not None and (today - prev).days < ns.min_days_between:
            continue
        seen = history[risk.member_id]
        standing = standing_of(risk)
        choice = choose(
            scenarios_for(risk, cohort, today, bool(ns.postcards), standing),
            risk.stage.value,
            risk.level,
            values_for(
                session,
                cohort,
                risk,
                today,
                teachers[risk.chat_id],
                balances.get(risk.member_id, 0),
                standing,
            ),
            seen.used,
            seen.hashes,
            ns.postcards,
            seen.postcards,
            f"{risk.member_id}:{today}",
        )
        if choice is None:
            continue
        route = delivery_route(risk.member_id, risk.kind, risk.owner_userid)
        at = pick_send_time(local, ns, f"{risk.chat_id}:{risk.member_id}:{today}", slots)
        nudge = Nudge(
            cohort_id=cohort.id,
            chat_id=risk.chat_id,
            member_id=risk.member_id,
            day=today,
            script_id=choice.script.id,
            variant=choice.variant,
            scenario=choice.script.scenario,
            stage=risk.stage.value,
            level=risk.level,
            signals=",".join(s.value for s in risk.signals),
            text=choice.text,
            text_hash=text_hash(choice.text),
            route=route.kind,
            status=store.HELD if route.kind == NO_ROUTE else store.SCHEDULED,
            scheduled_at=now if route.kind == NO_ROUTE else at,
            postcard=choice.postcard,
        )
        session.add(nudge)
        planned.append(nudge)
        last[risk.member_id] = today
        seen.used.add((nudge.script_id, nudge.variant))
        seen.hashes.add(nudge.text_hash)
        if nudge.postcard is not None:
            seen.postcards.add(nudge.postcard)
    session.flush()  # one batch of INSERTs (the callers read the nudges' ids)
    return planned


def propose_offer(
    session: Session,
    cohort: CohortSettings,
    risk: MemberRisk,
    now: datetime,
    tiers: tuple[OfferTier, ...],
    offers: Sequence[Offer] | None = None,
) -> Offer | None:
    """Propose the next rung of the offers ladder the learner's risk level reaches (one open
    proposal at a time; each tier at most once per learner and cohort). ``offers``: the
    learner's offers in this cohort, when the caller read them already."""
    if offers is None:
        offers = store.offers_of(session, risk.member_id, cohort.id)
    offer = next_offer(cohort, risk, now, tiers, offers)
    if offer is not None:
        session.add(offer)
        session.flush()
    return offer


def next_offer(
    cohort: CohortSettings,
    risk: MemberRisk,
    now: datetime,
    tiers: tuple[OfferTier, ...],
    offers: Sequence[Offer],
) -> Offer | None:
    """The offer :func:`propose_offer` would propose, given the learner's ``offers`` (not
    added to any session)."""
    if any(o.status in (store.PROPOSED, store.APPROVED) for o in offers):
        return None
    # A withdrawn offer was never given: the tier can be proposed again if they slip back.
    given = {o.tier for o in offers if o.status != store.WITHDRAWN}
    for tier in tiers:
        if tier.id in given or tier.min_level > risk.level:
            continue
        return Offer(
            cohort_id=cohort.id,
            chat_id=risk.chat_id,
            member_id=risk.member_id,
            tier=tier.id,
            level=risk.level,
            proposed_at=now,
        )
    return None


def lapsed_offers(
    session: Session, radar: dict[str, GroupRadar], offers: Sequence[Offer]
) -> dict[int, str]:
    """Which of these open offers (of the radar's groups) have lapsed, by offer id, with why
    (``store.LEFT``, ``store.RECOVERED``): the learner left the group (proposed or approved),
    or a proposal's learner is no longer flagged by this radar (hysteresis included: someone
    "恢复观察中" is still flagged). An approved offer to a learner still in the group stands."""
    offers = [o for o in offers if o.chat_id in radar and o.id is not None]
    if not offers:
        return {}
    gone = roster.departed(session, list({(o.chat_id, o.member_id) for o in offers}))
    flagged: dict[str, set[str]] = {}
    out: dict[int, str] = {}
    for o in offers:
        assert o.id is not None
        if (o.chat_id, o.member_id) in gone:
            out[o.id] = store.LEFT
        elif o.status == store.PROPOSED:
            ids = flagged.get(o.chat_id)
            if ids is None:
                ids = flagged[o.chat_id] = {m.member_id for m in radar[o.chat_id].flagged}
            if o.member_id not in ids:
                out[o.id] = store.RECOVERED
    return out


def lapse_offers(session: Session, radar: dict[str, GroupRadar], now: datetime) -> list[Offer]:
    """Withdraw the open offers of the radar's groups that :func:`lapsed_offers` finds; return
    the offers still open. Runs in the nightly nudge plan and the live digest."""
    offers = store.open_offers(session, list(radar))
    lapsed = lapsed_offers(session, radar, offers)
    for o in offers:
        if o.id in lapsed:
            store.withdraw(o, lapsed[o.id], now)
    if lapsed:
        session.flush()
    return [o for o in offers if o.id not in lapsed]


def lapse_reason(session: Session, settings: Settings, offer: Offer) -> str:
    """Why a withdrawn offer lapsed, in words for the teacher."""
    name = roster.names(session, [offer.member_id])[offer.member_id]
    when = ""
    if offer.withdrawn_at is not None:
        try:
            cohort = settings.cohort(offer.cohort_id)
            when = f"{offer.withdrawn_at.astimezone(cohort.timezone):%m-%d}"
        except KeyError:
            pass
    if offer.withdrawn_reason == store.LEFT:
        return f"{name} 已退群" + (f"（{when}）" if when else "")
    if offer.withdrawn_reason == store.RECOVERED:
        return f"{name} 已恢复活跃，不在预警名单上了" + (f"（{when}起）" if when else "")
    if offer.withdrawn_reason == store.ENDED:
        days = settings.nudges.offer_days_after_end
        return f"训练营已结营超过{days}天，挽回方案只在结营后{days}天内发送"
    return "已撤回"


async def send_due(ctx: Context) -> int:
    """Send the nudges and approved offers that are due, inside the window; return how many."""
    now = ctx.clock.now()
    settings = ctx.settings
    ns = settings.nudges
    sent = 0
    session = ctx.session
    cohorts = {c.id: c for c in settings.cohorts}
    for n in store.due(session, now):
        cohort = cohorts.get(n.cohort_id)
        if cohort is None or n.id is None:
            continue
        local = now.astimezone(cohort.timezone)
        today = learning_day(now, cohort.timezone, cohort.day_start_hour)
        if not may_send_at(local, ns):
            if today > n.day or local.time() >= window_of(local, ns)[1]:
                store.mark(session, n.id, store.EXPIRED)
            continue
        if n.route == MSG_TEMPLATE and _customer_limit_reached(
            session, settings, cohort, n.member_id, now
        ):
            store.mark(session, n.id, store.LIMITED)
            continue
        await ctx.send(
            Outbound(channel=Channel.PRIVATE, to=n.member_id, text=n.text, key=f"nudge:{n.id}")
        )
        store.mark(session, n.id, store.SENT, now)
        NUDGES_SENT.inc(channel=n.route)
        sent += 1
    sent += await _send_offers(ctx, now)
    return sent


async def nudge_send_job(app: App) -> int:
    """:func:`send_due` in a unit of work of its own (tests, ``cohortbot`` tools)."""
    async with app.db.unit_of_work() as uow:
        return await send_due(app.pipeline.context(uow))


def _customer_limit_reached(
    session: Session, settings: Settings, cohort: CohortSettings, member_id: str, now: datetime
) -> bool:
    today = learning_day(now, cohort.timezone, cohort.day_start_hour)
    start = day_start(today, cohort.timezone, cohort.day_start_hour)
    count = store.templates_sent_on(session, member_id, start, start + timedelta(days=1))
    return count >= settings.nudges.per_customer_daily_limit


async def _send_offers(ctx: Context, now: datetime) -> int:
    session = ctx.session
    settings = ctx.settings
    sent = 0
    offers = store.approved_unsent(session)
    # 免打扰 after the proposal (or the approval): the offer waits, it goes out if they opt back in.
    silenced = store.opted_out(session, [o.member_id for o in offers]) if offers else set()
    # A learner who left the group since the approval is not sent it (the offer lapses).
    gone = roster.departed(session, list({(o.chat_id, o.member_id) for o in offers}))
    for offer in offers:
        if (offer.chat_id, offer.member_id) in gone:
            store.withdraw(offer, store.LEFT, now)
            continue
        if offer.member_id in silenced:
            continue
        try:
            cohort = cohort_dates.effective(ctx.uow.writer, settings.cohort(offer.cohort_id))
        except KeyError:
            continue
        if too_late(settings, cohort, now):
            store.withdraw(offer, store.ENDED, now)
            continue
        if not may_send_at(now.astimezone(cohort.timezone), settings.nudges):
            continue
        member = session.get(roster.Member, offer.member_id)
        kind = member.kind if member else "external"
        route = delivery_route(offer.member_id, kind, member.owner_userid if member else None)
        if route.kind == NO_ROUTE:
            continue
        if route.kind == MSG_TEMPLATE and _customer_limit_reached(
            session, settings, cohort, offer.member_id, now
        ):
            continue
        tier = next((t for t in settings.nudges.offers if t.id == offer.tier), None)
        if tier is None:
            continue
        text = offer_text(
            session, cohort, offer, tier.text, member.name if member else offer.member_id
        )
        await ctx.send(
            Outbound(
                channel=Channel.PRIVATE, to=offer.member_id, text=text, key=f"offer:{offer.id}"
            )
        )
        offer.status = store.OFFER_SENT
        offer.sent_at = now
        sent += 1
    session.flush()
    return sent


def too_late(settings: Settings, cohort: CohortSettings, now: datetime) -> bool:
    """Whether an approved offer of ``cohort`` can no longer go out: more than
    ``[nudges] offer_days_after_end`` days after its last day."""
    today = learning_day(now, cohort.timezone, cohort.day_start_hour)
    return (today - cohort.end_date).days > settings.nudges.offer_days_after_end


def offer_text(
    session: Session, cohort: CohortSettings, offer: Offer, tier_text: str, name: str
) -> str:
    """The offer message: an ``offer`` script variant (rotating by offer id) around the tier."""
    scripts = library.candidates("offer", "sprint", max(1, offer.level))
    script = scripts[0] if scripts else None
    teacher = _teacher_name(session, cohort, offer.chat_id)
    if script is None:
        return f"{name}，{tier_text}"
    template = script.variants[(offer.id or 0) % len(script.variants)]
    return library.render(template, {"name": name, "offer": tier_text, "teacher": teacher})


def plan_cohort(ctx: Context, cohort: CohortSettings) -> list[Nudge]:
    """Settle earlier nudges' effectiveness and plan ``cohort``'s nudges if its window is open;
    each planned send gets a durable scheduler timer at its minute. After the cohort's last
    day nothing is planned (the job still runs to settle and to send approved offers)."""
    now = ctx.clock.now()
    settings = ctx.settings
    store.settle_effectiveness(ctx.session, now, settings.radar.ignored_nudge_hours)
    if not settings.nudges.enabled or not may_send_at(
        now.astimezone(cohort.timezone), settings.nudges
    ):
        return []
    if learning_day(now, cohort.timezone, cohort.day_start_hour) > cohort.end_date:
        return []
    planned = plan_nudges(ctx.session, settings, cohort, now)
    for n in planned:
        if n.status == store.SCHEDULED and n.id is not None:
            schedule.add_timer(ctx.session, f"nudge.send:{n.id}", SEND_TIMER, n.scheduled_at, now)
    return planned


async def plan_job(ctx: Context, run: Run) -> None:
    """Scheduler job at the start of each nudge window: plan the run's cohort, send what is due."""
    cohort = ctx.cohort if ctx.cohort is not None else ctx.settings.cohort(str(run.cohort_id))
    plan_cohort(ctx, cohort)
    await send_due(ctx)


async def send_timer(ctx: Context, run: Run) -> None:
    """Scheduler timer at a planned nudge's minute."""
    await send_due(ctx)


SEND_TIMER = "nudge.send"
TIMERS = {SEND_TIMER: send_timer}


def days_after_end(settings: Settings) -> int:
    """How many days after a cohort's last day its nudge job keeps running: approved offers go
    out for ``[nudges] offer_days_after_end`` days, and the last days' nudges are settled once
    their ``[radar] ignored_nudge_hours`` have passed (a day more, since the job runs at the
    window's start, before the hour of the send)."""
    settle = -(-settings.radar.ignored_nudge_hours // 24) + 1
    return max(settings.nudges.offer_days_after_end, settle)


def plan_days(settings: Settings) -> CohortFilter:
    """The days the nudge job runs on: the cohort's learning days and
    :func:`days_after_end` more (made again from 开营/结营 dates by the scheduler)."""
    extra = days_after_end(settings)

    def days(cohort: CohortSettings) -> Callable[[date], bool]:
        last = cohort.length_days + extra

        def on(day: date) -> bool:
            return 1 <= cohort.cohort_day(day) <= last

        return on

    return days


def jobs(settings: Settings) -> list[DailyJob]:
    """Nudge planning once at the start of each window (weekdays and weekends differ), a minute
    in so the window is open, on the cohort's days and :func:`days_after_end` more. Sends then
    run on their timers."""
    ns = settings.nudges
    starts = sorted({ns.weekday_window[0], ns.weekend_window[0]})
    days = plan_days(settings)
    return [
        cohort_job(
            c,
            f"nudge.plan.{hm[0]:02d}{hm[1]:02d}:{c.id}",
            (datetime.combine(date.min, _t(hm)) + timedelta(minutes=1)).time(),
            plan_job,
            quiet=False,
            days=days,
        )
        for hm in starts
        for c in settings.cohorts
    ]


async def nudge_job(app: App) -> int:
    """Plan every cohort's nudges and send what is due, in one unit of work (tests, tools).
    Returns how many nudges were planned."""
    async with app.db.unit_of_work() as uow:
        ctx = app.pipeline.context(uow)
        planned = sum(len(plan_cohort(ctx, cohort)) for cohort in app.settings.cohorts)
        await send_due(ctx)
    return planned


async def next_nudge_due(app: App) -> datetime | None:
    """When the next planned nudge is due (the scheduler can add a one-shot trigger there)."""
    async with app.db.unit_of_work() as uow:
        return store.next_due(uow.session)


# --- commands --------------------------------------------------------------------------------


@commands.command("免打扰", "mute", usage="免打扰", summary="不再接收私信学习提醒")
async def opt_out(update: Update, ctx: Context, call: Call) -> None:
    store.set_opt_out(ctx.session, update.sender_id, True, ctx.clock.now())
    await reply(update, ctx, "好的，已为你关闭私信学习提醒。想恢复时发送“恢复提醒”即可。")


@commands.command("恢复提醒", "unmute", usage="恢复提醒", summary="重新接收私信学习提醒")
async def opt_in(update: Update, ctx: Context, call: Call) -> None:
    store.set_opt_out(ctx.session, update.sender_id, False, ctx.clock.now())
    await reply(update, ctx, "好的，已为你恢复私信学习提醒。")


@commands.command(
    "阶段",
    "stage",
    role=Role.LEADER,
    usage="阶段 @某人 <新人期|适应期|进阶期|冲刺期|结营期|结营后|自动>",
    summary="调整学员的学习阶段（话术按阶段选择）",
    group_only=True,
)
async def set_stage(update: Update, ctx: Context, call: Call) -> None:
    if len(call.mentions) != 1 or len(call.words) != 1:
        raise UsageError("请 @ 一位学员并写明阶段")
    cohort = ctx.settings.cohort_of(update.chat_id)
    if cohort is None:
        raise UsageError("本群没有配置训练营")
    member = call.mentions[0]
    name = roster.names(ctx.session, [member])[member]
    word = call.words[0]
    if word in ("自动", "auto"):
        radar_store.set_stage(
            ctx.session, cohort.id, member, None, update.sender_id, ctx.clock.now()
        )
        await reply(update, ctx, f"已恢复 {name} 的阶段为按开营天数自动计算。")
        return
    stage = parse_stage(word)
    if stage is None:
        raise UsageError(f"不认识的阶段「{word}」")
    radar_store.set_stage(
        ctx.session, cohort.id, member, stage.value, update.sender_id, ctx.clock.now()
    )
    await reply(update, ctx, f"已将 {name} 的阶段设为「{stage.label}」。")


@commands.command(
    "批准", "approve", role=Role.LEADER, usage="批准 <提议号>", summary="批准给学员的挽回方案"
)
async def approve(update: Update, ctx: Context, call: Call) -> None:
    if len(call.words) != 1 or not call.words[0].lstrip("#").isdigit():
        raise UsageError("请写提议号")
    offer = store.get_offer(ctx.session, int(call.words[0].lstrip("#")))
    if offer is None or role_of(ctx.settings, offer.chat_id, update.sender_id) < Role.LEADER:
        await reply(update, ctx, "没有找到这个提议号。")
        return
    if offer.status == store.PROPOSED and roster.departed(
        ctx.session, [(offer.chat_id, offer.member_id)]
    ):
        store.withdraw(offer, store.LEFT, ctx.clock.now())
        ctx.session.flush()
    if offer.status == store.PROPOSED:
        try:
            cohort = cohort_dates.effective(ctx.uow.writer, ctx.settings.cohort(offer.cohort_id))
        except KeyError:
            cohort = None
        if cohort is not None and too_late(ctx.settings, cohort, ctx.clock.now()):
            store.withdraw(offer, store.ENDED, ctx.clock.now())
            ctx.session.flush()
    if offer.status == store.WITHDRAWN:
        why = lapse_reason(ctx.session, ctx.settings, offer)
        await reply(update, ctx, f"提议 #{offer.id} 已失效：{why}，不会发送。")
        return
    if offer.status != store.PROPOSED:
        await reply(update, ctx, f"提议 #{offer.id} 已经处理过了。")
        return
    offer.status = store.APPROVED
    offer.approved_by = update.sender_id
    offer.approved_at = ctx.clock.now()
    ctx.session.flush()
    name = roster.names(ctx.session, [offer.member_id])[offer.member_id]
    tier = next((t for t in ctx.settings.nudges.offers if t.id == offer.tier), None)
    what = tier.name if tier else offer.tier
    when = "将在下一个提醒时段私信发送"
    if offer.member_id in store.opted_out(ctx.session, [offer.member_id]):
        when = "但对方设置了免打扰，取消免打扰之前不会发送"
    await reply(update, ctx, f"已批准提议 #{offer.id}：给 {name} 的「{what}」，{when}。")


@commands.command(
    "潜水",
    "quiet",
    role=Role.LEADER,
    usage="潜水 [天数]",
    summary="查看潜水名单和流失风险",
)
async def quiet_list(update: Update, ctx: Context, call: Call) -> None:
    """In a group, that group's list; in single chat, the lists of every group the sender leads
    or teaches (risk levels need not be read out in front of the learners)."""
    days: int | None = None
    if call.words:
        if len(call.words) != 1 or not call.words[0].isdigit():
            raise UsageError("天数请写数字")
        days = int(call.words[0])
    if update.is_group:
        cohort = ctx.cohort  # the group's cohort, with 开营/结营 applied (see Pipeline.context)
        if cohort is None:
            raise UsageError("本群没有配置训练营")
        lines = _quiet_lines(ctx, cohort, update.chat_id, days)
    else:
        lines = []
        for cohort in ctx.settings.cohorts:
            cohort = cohort_dates.effective(ctx.uow.writer, cohort)
            for g in cohort.groups:
                if update.sender_id in g.leaders or update.sender_id in g.teachers:
                    if lines:
                        lines.append("")
                    lines.append(f"【{g.name or g.chat_id}】")
                    lines += _quiet_lines(ctx, cohort, g.chat_id, days)
    await reply(update, ctx, fit_bytes(lines, 2000))


def _quiet_lines(ctx: Context, cohort: CohortSettings, chat_id: str, days: int | None) -> list[str]:
    """One group's quiet list: a title line, then a line per learner."""
    today = learning_day(ctx.clock.now(), cohort.timezone, cohort.day_start_hour)
    radar = evaluate(ctx.session, ctx.settings, cohort, [chat_id], today, persist=False)
    group = radar[chat_id]
    if days is None:
        rows = group.flagged
        title = f"潜水预警（{len(rows)}人）"
    else:
        rows = sorted(
            (m for m in group.members if m.days_quiet >= days),
            key=lambda m: (-m.level, -m.days_quiet, m.name),
        )
        title = f"{days}天以上未发言（{len(rows)}人）"
    if not rows:
        return [f"{title}：没有需要关注的同学 👍"]
    lines = [title]
    for m in rows:
        signals = "、".join(SIGNAL_LABELS[s] for s in m.signals) or "无"
        lines.append(
            f"· {m.name} {m.level_label} 未发言{m.days_quiet}天 连续打卡{m.streak}天｜{signals}"
        )
    return lines


def fit_bytes(lines: list[str], limit: int) -> str:
    """Join lines, dropping the tail (with a count) so the text fits ``limit`` UTF-8 bytes."""
    out: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        extra = len(line.encode()) + 1
        if size + extra > limit - 40:
            out.append(f"……另有{len(lines) - i}人")
            break
        out.append(line)
        size += extra
    return "\n".join(out)
