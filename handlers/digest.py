"""The teacher digest (SPEC §10): per group, who is active, check-in rate against the 7-day
average, joins and leaves, the quiet list by risk with signals and a suggested script, milestones,
top reviewers, hot topics, yesterday's nudges and whether they worked, success rates, pending
redemptions and offers to approve. Markdown, split on line boundaries to fit WeCom's 4096 bytes.

:func:`teacher_digest_job` is the scheduled job (issue 5 registers it per teacher at
``nudges.digest_time``); :func:`group_digests` is what ``cohortbot digest`` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from bot.clock import day_start, learning_day
from bot.collector import collector_paused
from bot.config import CohortSettings, Settings
from bot.context import Context
from bot.jobs import DailyJob, Run, cohort_job, per_teacher
from bot.outbound import Channel, Kind, Outbound
from bot.radar import (
    SIGNAL_LABELS,
    STAGE_LABELS,
    GroupRadar,
    MemberRisk,
    Stage,
    evaluate,
    stage_of,
)
from handlers import keywords
from handlers.nudges import (
    Standing,
    choose,
    first_usable,
    group_of,
    group_values,
    lapsed_offers,
    never_spoke,
    rotation,
    scenarios_for,
    scenarios_of,
    standings,
    values_for,
)
from storage import cohort_dates, points, rollup, roster
from storage import nudges as nudge_store
from storage.dialect import one_of
from storage.messages import Message
from storage.milestones import Badge
from storage.radar import joins_and_leaves, saving_flags

if TYPE_CHECKING:
    from bot.app import App

MARKDOWN_LIMIT = 4096
MAX_QUIET_LINES = 60  # beyond this the list says "and N more" (the dashboard has all)


# --- seams for other issues ------------------------------------------------------------------


def pending_redemptions(session: Session, cohort: CohortSettings, chat_id: str) -> list[str]:
    """One line per pending redemption made in this group, oldest first (``发放``/``取消``)."""
    return pending_redemptions_by_chat(session, cohort).get(chat_id, [])


def pending_redemptions_by_chat(session: Session, cohort: CohortSettings) -> dict[str, list[str]]:
    """:func:`pending_redemptions` of every group of the cohort, in two queries."""
    rows = points.pending(session, cohort.id)
    names = roster.names(session, [r.member_id for r in rows])
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r.chat_id, []).append(
            f"#{r.id} {names[r.member_id]}：{r.name}（{r.cost} 分）"
        )
    return out


def milestones_reached_today(
    session: Session, radar: GroupRadar, cohort: CohortSettings, day: date
) -> list[tuple[str, int]]:
    """The badges awarded in this group on learning day ``day`` (issue 4's milestone records)."""
    return milestones_by_chat(session, cohort, [radar.chat_id], day).get(radar.chat_id, [])


def milestones_by_chat(
    session: Session,
    cohort: CohortSettings,
    chat_ids: Sequence[str],
    day: date,
    now: datetime | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """:func:`milestones_reached_today` of these groups, in two queries.

    A digest sent during learning day ``day`` (``now``) lists the 24 hours before it, so a
    night owl's milestone at 00:30, after the evening's digest but in the same learning day, is
    in the next evening's; a digest of a past day lists that learning day."""
    end = day_start(day, cohort.timezone, cohort.day_start_hour) + timedelta(days=1)
    if now is not None and now < end:
        end = now
    stmt = select(Badge).where(
        col(Badge.cohort_id) == cohort.id,
        one_of(session, col(Badge.chat_id), chat_ids),
        col(Badge.created_at) >= end - timedelta(days=1),
        col(Badge.created_at) < end,
    )
    badges = session.scalars(stmt.order_by(col(Badge.id))).all()
    names = roster.names(session, [b.member_id for b in badges])
    out: dict[str, list[tuple[str, int]]] = {}
    for b in badges:
        out.setdefault(b.chat_id, []).append((names[b.member_id], b.milestone))
    return out


# --- building --------------------------------------------------------------------------------


def hot_topics(
    session: Session, chat_ids: Sequence[str], day: date, k: int = 6
) -> dict[str, list[str]]:
    """Top TF-IDF keywords (:mod:`handlers.keywords`) of each group's messages on ``day``
    (text still retained)."""
    rows = session.execute(
        select(col(Message.chat_id), col(Message.text)).where(
            one_of(session, col(Message.chat_id), chat_ids),
            col(Message.day) == day,
            col(Message.recalled).is_(False),
            col(Message.text).is_not(None),
        )
    ).all()
    texts: dict[str, list[str]] = {}
    for chat_id, text in rows:
        if text:
            texts.setdefault(chat_id, []).append(text)
    return {chat_id: keywords.topics(items, k) for chat_id, items in texts.items()}


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _rate(worked: int, decided: int) -> str:
    return f"{worked}/{decided}（{worked / decided:.0%}）" if decided else "—"


def suggestion(
    session: Session,
    cohort: CohortSettings,
    risk: MemberRisk,
    day: date,
    teacher: str,
    postcards: tuple[str, ...],
    balance: int | None = None,
    standing: Standing | None = None,
) -> tuple[str, str]:
    """A suggested script id and text for a flagged learner (without consulting history).
    ``balance``: the learner's points, when the caller read them already; ``standing``: towards
    the milestones."""
    choice = choose(
        scenarios_for(risk, cohort, day, bool(postcards), standing),
        risk.stage.value,
        risk.level,
        values_for(session, cohort, risk, day, teacher, balance, standing),
        set(),
        set(),
        postcards,
        set(),
        f"{risk.member_id}:{day}",
    )
    return (choice.script.id, choice.text) if choice else ("—", "")


class Suggestions:
    """:func:`suggestion` for every learner on a digest's quiet lists (the same choice and text),
    with what does not depend on the learner (the scenarios, the script and which of its variants
    can be filled) worked out once per kind of learner: a nightly digest suggests scripts to
    60,000 learners, of a few hundred kinds."""

    def __init__(
        self,
        cohort: CohortSettings,
        day: date,
        postcards: tuple[str, ...],
        standing: Callable[[MemberRisk], Standing] | None = None,
    ) -> None:
        self.cohort = cohort
        self.day = day
        self.postcards = postcards
        self.standing = standing or (lambda risk: Standing(risk.streak))
        self.card = bool(postcards) and postcards[0] is not None and postcards[0] != ""
        self.weekend = day.weekday() >= 5
        self._plans: dict[tuple[Any, ...], Any] = {}
        self._groups: dict[tuple[str, str], tuple[dict[str, object], frozenset[str]]] = {}
        self._next: dict[Standing, int | None] = {}

    def __call__(self, risk: MemberRisk, teacher: str, balance: int) -> tuple[str, str]:
        """The script id and text suggested to ``risk`` (``balance``: the learner's points)."""
        shared = self._groups.get((risk.chat_id, teacher))
        if shared is None:
            values = group_values(self.cohort, risk.chat_id, self.day, teacher)
            filled = frozenset([k for k, v in values.items() if v is not None and v != ""])
            shared = self._groups[(risk.chat_id, teacher)] = (values, filled)
        streak = risk.streak
        standing = self.standing(risk)
        if standing in self._next:
            nxt = self._next[standing]
        else:
            nxt = self._next[standing] = standing.next(self.cohort)
        near = standing.value > 0 and nxt is not None and nxt - standing.value <= 2
        name = risk.name
        key = (
            shared[1], tuple([f.signal for f in risk.fired]), risk.stage, risk.level, near,
            risk.holding, nxt is not None, name is not None and name != "",
            bool(balance), never_spoke(risk, self.cohort, self.day),
        )  # fmt: skip
        plan = self._plans.get(key, self)
        if plan is self:
            plan = self._plans[key] = self._plan(key)
        if plan is None:
            return "—", ""
        script, usable = plan
        values = {
            "name": name,
            "days_quiet": risk.days_quiet,
            "streak": streak,
            "points": balance,
            **shared[0],
            "stage": STAGE_LABELS[risk.stage],
        }
        if nxt is not None:
            values["next_milestone"] = nxt
            values["days_to_milestone"] = nxt - standing.value
        n = len(usable)
        rot = rotation(f"{risk.member_id}:{self.day}")
        for k in range(n):
            template = usable[(k + rot) % n]
            if template is not None:
                if "postcard" in template.fields:
                    values["postcard"] = self.postcards[0]
                return script.id, template.render(values)
        return "—", ""  # pragma: no cover - a plan has a usable variant

    def _plan(self, key: tuple[Any, ...]) -> Any:
        filled, signals, stage, level, near, holding, has_next, has_name, has_points, silent = key
        scenarios = scenarios_of(
            frozenset(signals),
            stage,
            level,
            near,
            holding,
            self.weekend,
            bool(self.postcards),
            silent,
        )
        present = set(filled) | {"days_quiet", "streak", "stage"}
        present |= {"next_milestone", "days_to_milestone"} if has_next else set()
        present |= {"name"} if has_name else set()
        present |= {"points"} if has_points else set()
        return first_usable(scenarios, stage.value, level, frozenset(present), self.card)


def render_group(
    session: Session,
    settings: Settings,
    cohort: CohortSettings,
    radar: GroupRadar,
    day: date,
    joins: tuple[int, int],
    topics: list[str],
    nudges_yesterday: Sequence[nudge_store.Nudge],
    nudges_today: dict[str, nudge_store.Nudge],
    rates: tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]],
    offers: Sequence[nudge_store.Offer],
    names: dict[str, str],
    prefetched: Prefetched | None = None,
    suggest: Suggestions | None = None,
) -> str:
    """One group's digest as markdown. ``prefetched``: what :func:`group_digests` read for all
    the groups at once (otherwise it is read here, for this group); ``suggest``: the
    :class:`Suggestions` of all the groups' quiet lists."""
    if prefetched is None:
        prefetched = prefetch(session, cohort, [radar], day)
    if suggest is None:
        standing = standings(session, settings, cohort)
        suggest = Suggestions(cohort, day, settings.nudges.postcards, standing)
    group = group_of(cohort, radar.chat_id)
    title = group.name if group and group.name else radar.chat_id
    n = cohort.cohort_day(day)
    lines = [
        f"## {title} · {cohort.course}",
        f"{day:%Y-%m-%d} · 第{n}天（{STAGE_LABELS[stage_of(cohort, day)]}）",
        f"**今日活跃** {radar.active_today}/{radar.total} 人 · 消息 {radar.messages_today} 条",
    ]
    total = radar.total or 1
    # Early on fewer than 7 days have passed: the average says over how many (none on day 1).
    n7 = radar.checkin_days7
    lines.append(
        f"**打卡** 今日 {radar.checkins_today} 人（{_pct(radar.checkins_today / total)}）"
        + (
            f" · 近{n7}日日均 {radar.checkin_avg7:.1f} 人（{_pct(radar.checkin_avg7 / total)}）"
            if n7
            else " · 开营首日，还没有往日数据"
        )
    )
    lines.append(f"**进出群** 新加入 {joins[0]} · 退群 {joins[1]}")
    flagged = radar.flagged
    lines.append(f"### 潜水预警（{len(flagged)}人）")
    if not flagged:
        lines.append("今天没有需要关注的同学。")
    teacher = names.get("__teacher__", "老师")
    for i, m in enumerate(flagged[:MAX_QUIET_LINES], 1):
        lines.append(
            f"{i}. **{m.name}** {m.level_label} · 未发言{m.days_quiet}天 · 连续打卡{m.streak}天"
            f" · {m.stage.label}"
        )
        lines.append(
            "   > 信号：" + "；".join([f"{SIGNAL_LABELS[f.signal]}（{f.why}）" for f in m.fired])
        )
        planned = nudges_today.get(m.member_id)
        if planned is not None:
            script_id, text = planned.script_id, planned.text
            state = {
                nudge_store.SENT: "已发送",
                nudge_store.SCHEDULED: "待发送",
                nudge_store.HELD: "仅摘要",
                nudge_store.LIMITED: "今日额度已用，明日再发",
            }.get(planned.status, planned.status)
            lines.append(f"   > 今日私信（{state}）`{script_id}`：{text}")
        elif m.member_id in prefetched.opted_out:
            lines.append("   > 已设免打扰：不发私信，也不建议私聊话术；可在群里或课上关心一下")
        else:
            script_id, text = suggest(m, teacher, prefetched.balances.get(m.member_id, 0))
            lines.append(f"   > 建议话术 `{script_id}`：{text}")
    if len(flagged) > MAX_QUIET_LINES:
        lines.append(f"……另有 {len(flagged) - MAX_QUIET_LINES} 人，见看板。")
    milestones = prefetched.milestones.get(radar.chat_id, [])
    lines.append("### 今日里程碑")
    lines.append("、".join(f"{name}（第{d}天）" for name, d in milestones) if milestones else "无")
    lines.append("### 点评之星")
    lines.append(
        "、".join(f"{name} {c}条" for _, name, c in radar.reviewers_today)
        if radar.reviewers_today
        else "无"
    )
    lines.append("### 热门话题")
    lines.append(" · ".join(topics) if topics else "无")
    worked = sum(1 for x in nudges_yesterday if x.worked)
    sent = [x for x in nudges_yesterday if x.status == nudge_store.SENT]
    lines.append(f"### 昨日私信提醒（发送 {len(sent)} · 已见效 {worked}）")
    for x in nudges_yesterday:
        mark = {True: "✅ 已回归", False: "❌ 未回应", None: "⏳ 观察中"}[x.worked]
        if x.status == nudge_store.HELD:
            mark = "📝 仅摘要（无法私信）"
        elif x.status == nudge_store.LIMITED:
            mark = "⏸ 当日私信额度已用，未发送（仍在预警名单则次日再发）"
        lines.append(f"- {names.get(x.member_id, x.member_id)} · `{x.script_id}` · {mark}")
    by_script, by_stage = rates
    if by_script:
        lines.append(
            "成功率（按话术）："
            + "；".join(f"`{k}` {_rate(*v)}" for k, v in sorted(by_script.items()))
        )
        lines.append(
            "成功率（按阶段）："
            + "；".join(
                f"{_stage_label(k)} {_rate(*v)}"
                for k, v in sorted(by_stage.items(), key=lambda kv: _stage_order(kv[0]))
            )
        )
    redemptions = prefetched.redemptions.get(radar.chat_id, [])
    lines.append(f"### 待处理兑换（{len(redemptions)}）")
    lines.extend(f"- {r}" for r in redemptions) if redemptions else lines.append("无")
    lines.append(f"### 待批准挽回方案（{len(offers)}）")
    tiers = {t.id: t.name for t in settings.nudges.offers}
    for o in offers:
        lines.append(
            f"- #{o.id} {names.get(o.member_id, o.member_id)} · {tiers.get(o.tier, o.tier)}"
            f" · 批准请回复「批准 {o.id}」"
        )
    if not offers:
        lines.append("无")
    return "\n".join(lines)


@dataclass(frozen=True)
class Prefetched:
    """What the digests of a set of groups read in bulk rather than per group or learner."""

    balances: dict[str, int]  # points of the learners on the quiet lists
    milestones: dict[str, list[tuple[str, int]]]
    redemptions: dict[str, list[str]]
    opted_out: frozenset[str] = frozenset()  # learners on the quiet lists who set 免打扰


def prefetch(
    session: Session,
    cohort: CohortSettings,
    radars: Sequence[GroupRadar],
    day: date,
    now: datetime | None = None,
) -> Prefetched:
    shown = [m.member_id for g in radars for m in g.flagged[:MAX_QUIET_LINES]]
    return Prefetched(
        points.balances_of(session, cohort.id, shown),
        milestones_by_chat(session, cohort, [g.chat_id for g in radars], day, now),
        pending_redemptions_by_chat(session, cohort),
        frozenset(nudge_store.opted_out(session, shown)) if shown else frozenset(),
    )


def _stage_order(code: str) -> tuple[int, str]:
    """Stages in course order (新人期 first); a code that is no stage after them."""
    order = list(Stage._value2member_map_)
    return (order.index(code), "") if code in order else (len(order), code)


def _stage_label(code: str) -> str:
    return STAGE_LABELS[Stage(code)] if code in Stage._value2member_map_ else code


@collector_paused()
def group_digests(
    session: Session,
    settings: Settings,
    cohort: CohortSettings,
    chat_ids: Sequence[str],
    day: date,
    persist: bool = True,
    now: datetime | None = None,
) -> dict[str, str]:
    """The digest markdown of each of these groups on learning day ``day``, sent at ``now``
    (None: after that day; see :func:`milestones_by_chat`)."""
    # The changed flag states are saved while the digests are rendered (below).
    unsaved: list[dict[str, Any]] = []
    radar = evaluate(session, settings, cohort, chat_ids, day, persist=persist, unsaved=unsaved)
    start = day_start(day, cohort.timezone, cohort.day_start_hour)
    joins = joins_and_leaves(session, chat_ids, start, start + timedelta(days=1))
    topics = hot_topics(session, chat_ids, day)
    yesterday = nudge_store.of_groups_between(session, chat_ids, start - timedelta(days=1), start)
    today_nudges: dict[str, dict[str, nudge_store.Nudge]] = {}
    for x in nudge_store.of_day(session, chat_ids, day):
        today_nudges.setdefault(x.chat_id, {})[x.member_id] = x
    offers = nudge_store.pending_offers(session, chat_ids)
    # Proposals whose learner recovered or left since the nudge plan are not for approval:
    # withdrawn by a live digest, left out of any.
    lapsed = lapsed_offers(session, radar, offers)
    if lapsed:
        if persist and now is not None:
            for o in offers:
                if o.id in lapsed:
                    nudge_store.withdraw(o, lapsed[o.id], now)
        offers = [o for o in offers if o.id not in lapsed]
    rates = nudge_store.success_rates_by_chat(session, chat_ids)
    # Names are looked up for yesterday's nudges, the offers and the teachers only.
    teachers = {gs.teachers[0] for c in chat_ids if (gs := group_of(cohort, c)) and gs.teachers}
    wanted = {x.member_id for x in yesterday} | {o.member_id for o in offers} | teachers
    names: dict[str, str] = {}
    for g in radar.values():
        names.update(g.names(wanted))
    # Learners no longer on the radar (yesterday's nudge to someone who has left since).
    missing = ({x.member_id for x in yesterday} | {o.member_id for o in offers}) - names.keys()
    if missing:
        names.update(roster.names(session, missing))
    prefetched = prefetch(session, cohort, list(radar.values()), day, now)
    yesterday_by_chat: dict[str, list[nudge_store.Nudge]] = {}
    for x in yesterday:
        yesterday_by_chat.setdefault(x.chat_id, []).append(x)
    offers_by_chat: dict[str, list[nudge_store.Offer]] = {}
    for o in offers:
        offers_by_chat.setdefault(o.chat_id, []).append(o)
    suggest = Suggestions(
        cohort, day, settings.nudges.postcards, standings(session, settings, cohort)
    )
    out: dict[str, str] = {}
    with saving_flags(session, unsaved):  # rendering reads nothing more from the database
        for chat_id in chat_ids:
            group = group_of(cohort, chat_id)
            teacher_id = group.teachers[0] if group and group.teachers else ""
            names["__teacher__"] = names.get(teacher_id, "老师") if teacher_id else "老师"
            out[chat_id] = render_group(
                session,
                settings,
                cohort,
                radar[chat_id],
                day,
                joins.get(chat_id, (0, 0)),
                topics.get(chat_id, []),
                yesterday_by_chat.get(chat_id, []),
                today_nudges.get(chat_id, {}),
                rates.get(chat_id, ({}, {})),
                offers_by_chat.get(chat_id, []),
                names,
                prefetched,
                suggest,
            )
    return out


#: How the lines that continue a quiet-list entry start (see :func:`render_group`).
CONTINUES = "   "
ENTRY_CONTINUES = CONTINUES.encode()


def split_markdown(text: str, limit: int = MARKDOWN_LIMIT) -> list[str]:
    """Split on line boundaries into parts of at most ``limit`` UTF-8 bytes; a single line longer
    than the limit is cut at a character boundary. A quiet-list entry's indented lines (its
    signals and script, "   > ...") stay with its name, unless the entry alone is too long."""
    # Each part takes as many whole lines as fit: it ends at the last line break within
    # ``limit`` bytes of its start (found in the encoded text, not line by line: a nightly pass
    # splits 200,000 lines). A line longer than the limit is cut by _split_lines.
    data = text.encode()
    parts: list[str] = []
    at = 0
    while len(data) - at > limit:
        cut = data.rfind(b"\n", at, at + limit + 1)
        if cut < 0:
            return _split_lines(text, limit)
        whole = cut
        while whole > at and data.startswith(ENTRY_CONTINUES, whole + 1):
            whole = data.rfind(b"\n", at, whole)
        if whole > at:
            cut = whole
        parts.append(data[at:cut].decode())
        at = cut + 1
    parts.append(data[at:].decode())
    return [p for p in parts if p.strip()]


def _split_lines(text: str, limit: int) -> list[str]:
    """:func:`split_markdown` line by line, cutting lines longer than ``limit``."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.split("\n"):
        while len(line.encode()) > limit:
            cut = limit
            raw = line.encode()[:cut]
            piece = raw.decode("utf-8", errors="ignore")
            if current:
                parts.append("\n".join(current))
                current, size = [], 0
            parts.append(piece)
            line = line[len(piece) :]
        extra = len(line.encode()) + (1 if current else 0)
        while current and size + extra > limit:
            # Cut before the last line that does not continue an entry, if the part keeps text.
            j = len(current)
            if line.startswith(CONTINUES):
                j = len(current) - 1
                while j > 0 and current[j].startswith(CONTINUES):
                    j -= 1
                if j < 1 or not "\n".join(current[:j]):
                    j = len(current)
            parts.append("\n".join(current[:j]))
            current = current[j:]
            size = len("\n".join(current).encode())
            extra = len(line.encode()) + (1 if current else 0)
        current.append(line)
        size += extra
    if current:
        parts.append("\n".join(current))
    return [p for p in parts if p.strip()]


async def send_digests(ctx: Context, teacher_id: str, cohort_id: str | None = None) -> int:
    """Queue one teacher the digest of each of their groups (GroupSettings.teachers) as app
    message markdown, split to fit 4096 bytes. Returns the number of messages queued."""
    now = ctx.clock.now()
    queued = 0
    for cohort in ctx.settings.cohorts:
        if cohort_id is not None and cohort.id != cohort_id:
            continue
        chat_ids = [g.chat_id for g in cohort.groups if teacher_id in g.teachers]
        if not chat_ids:
            continue
        cohort = cohort_dates.effective(ctx.uow.writer, cohort)  # 开营/结营: stages, day numbers
        day = learning_day(now, cohort.timezone, cohort.day_start_hour)
        digests = group_digests(ctx.session, ctx.settings, cohort, chat_ids, day, now=now)
        for chat_id in chat_ids:
            for i, part in enumerate(split_markdown(digests[chat_id])):
                await ctx.send(
                    Outbound(
                        channel=Channel.PRIVATE,
                        to=teacher_id,
                        text=part,
                        kind=Kind.MARKDOWN,
                        key=f"digest:{teacher_id}:{chat_id}:{day}:{i}",
                    )
                )
                queued += 1
    return queued


async def digest_job(ctx: Context, run: Run) -> None:
    """The scheduler's per-teacher daily job (``run.target`` is the teacher)."""
    await send_digests(ctx, str(run.target), run.cohort_id)


async def rollup_job(ctx: Context, run: Run) -> None:
    """Bring the radar's rollup of the cohort's counters to the new learning day, ten minutes
    after it starts, so the day's nudge planning and digests read one row per learner (the
    first radar pass of the day would otherwise do it, and wait for it)."""
    cohort = ctx.cohort if ctx.cohort is not None else ctx.settings.cohort(str(run.cohort_id))
    day = learning_day(ctx.clock.now(), cohort.timezone, cohort.day_start_hour)
    rollup.ensure(ctx.session, [g.chat_id for g in cohort.groups], day, cohort.start_date)


def jobs(settings: Settings) -> list[DailyJob]:
    """One digest job per teacher and cohort at ``[nudges] digest_time`` (default 21:40), and
    the radar rollup per cohort at the start of each learning day (+10 min)."""
    hour, minute = settings.nudges.digest_time
    return [
        *per_teacher(settings, "digest", time(hour % 24, minute), digest_job),
        *(
            cohort_job(
                c, f"radar.rollup:{c.id}", time(c.day_start_hour, 10), rollup_job, quiet=False
            )
            for c in settings.cohorts
        ),
    ]


async def teacher_digest_job(app: App, teacher_id: str) -> int:
    """:func:`send_digests` in a unit of work of its own (tests, ``cohortbot`` tools)."""
    async with app.db.unit_of_work() as uow:
        return await send_digests(app.pipeline.context(uow), teacher_id)


def teacher_ids(settings: Settings) -> list[str]:
    """Every teacher named in a group (one digest job each)."""
    return sorted({t for c in settings.cohorts for g in c.groups for t in g.teachers})
