"""The churn radar (SPEC §7): six learning stages, eight signals with a one-line Chinese
explanation each, risk levels, and hysteresis.

:func:`evaluate` reads one aggregate row per (group, member) from :mod:`storage.radar` (never raw
messages), decides every learner's signals in Python with plain bit arithmetic, and persists the
flag state so a flagged learner is cleared only after ``clear_after_active_days`` active days.
The signal rules themselves (:func:`signals_of`) are pure.

Conventions: a learning day ``D`` is "today"; windows of completed days end yesterday, and
today's activity only ever counts in the learner's favour (the nudge run happens before most
evening check-ins).
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from bot.clock import learning_day
from bot.collector import collector_paused
from bot.config import CohortSettings, RadarSettings, Settings
from storage import nudges as nudge_store
from storage import radar as store
from storage.nudges import Nudge
from storage.radar import Learner


class Stage(StrEnum):
    """The six learning stages (seed 000: six script sets by progress)."""

    NEWCOMER = "newcomer"  # 新人期 days 1-3
    ADAPTING = "adapting"  # 适应期 days 4-7, the slump
    ADVANCING = "advancing"  # 进阶期 days 8-14
    SPRINT = "sprint"  # 冲刺期 day 15 to 3 days before the end
    CLOSING = "closing"  # 结营期 the last 3 days
    AFTER = "after"  # 结营后 after the end

    @property
    def label(self) -> str:
        return STAGE_LABELS[self]


STAGE_LABELS = {
    Stage.NEWCOMER: "新人期",
    Stage.ADAPTING: "适应期",
    Stage.ADVANCING: "进阶期",
    Stage.SPRINT: "冲刺期",
    Stage.CLOSING: "结营期",
    Stage.AFTER: "结营后",
}


def parse_stage(text: str) -> Stage | None:
    """A stage from its Chinese label (with or without 期) or its English code."""
    text = text.strip().lower()
    for stage, label in STAGE_LABELS.items():
        if text in (stage.value, label, label.rstrip("期")):
            return stage
    return None


def stage_of(cohort: CohortSettings, day: date) -> Stage:
    """The stage of a cohort on a learning day. The last three days win over 进阶/冲刺, but the
    first three days stay 新人期 even in a very short cohort."""
    n = cohort.cohort_day(day)
    length = cohort.length_days
    if n > length:
        return Stage.AFTER
    if n <= 3:
        return Stage.NEWCOMER
    if n >= length - 2:
        return Stage.CLOSING
    if n <= 7:
        return Stage.ADAPTING
    if n <= 14:
        return Stage.ADVANCING
    return Stage.SPRINT


class Signal(StrEnum):
    """The eight radar signals, in SPEC §7 order."""

    SILENCE = "silence"
    CHECKIN_DROP = "checkin_drop"
    STREAK_BROKEN = "streak_broken"
    NO_CHECKIN = "no_checkin"
    NO_INTRO = "no_intro"
    VOLUME_DROP = "volume_drop"
    IGNORED_NUDGE = "ignored_nudge"
    LOW_PROGRESS = "low_progress"


SIGNAL_LABELS = {
    Signal.SILENCE: "长时间未发言",
    Signal.CHECKIN_DROP: "三日打卡波动",
    Signal.STREAK_BROKEN: "连续打卡中断",
    Signal.NO_CHECKIN: "连续未打卡",
    Signal.NO_INTRO: "未自我介绍",
    Signal.VOLUME_DROP: "发言量骤降",
    Signal.IGNORED_NUDGE: "未回应提醒",
    Signal.LOW_PROGRESS: "课程进度落后",
}

LEVEL_LABELS = {0: "正常", 1: "轻度预警", 2: "中度警报", 3: "高危警报"}


def level_of(count: int) -> int:
    """1-2 signals light (1), 3-4 medium (2), 5+ high (3)."""
    if count <= 0:
        return 0
    if count <= 2:
        return 1
    if count <= 4:
        return 2
    return 3


@dataclass(frozen=True)
class Fired:
    signal: Signal
    why: str  # one line, Chinese


@dataclass(slots=True)
class MemberRisk:
    """One learner's radar result on one learning day."""

    chat_id: str
    member_id: str
    name: str
    kind: str
    owner_userid: str | None
    stage: Stage
    level: int
    fired: list[Fired]
    days_quiet: int
    streak: int
    flagged: bool
    holding: bool = False  # flagged only by hysteresis (recovering, not yet cleared)
    active_today: bool = False
    checked_today: bool = False
    joined_day: date | None = None

    @property
    def level_label(self) -> str:
        return LEVEL_LABELS[self.level]

    @property
    def signals(self) -> list[Signal]:
        return [f.signal for f in self.fired]


@dataclass
class GroupRadar:
    """A group's radar and the day's headline figures (for the digest).

    Learners who are clearly fine (no signal can fire, never flagged) are kept as their raw
    rows and become :class:`MemberRisk` objects only when :attr:`members` is read: a nightly
    pass over 200,000 learners would otherwise build 120,000 objects nobody looks at.
    """

    chat_id: str
    cohort_id: str
    day: date
    total: int = 0
    active_today: int = 0
    messages_today: int = 0
    checkins_today: int = 0
    checkin_avg7: float = 0.0  # mean daily check-ins over the 7 days before today
    checkin_days7: int = 0  # how many of those 7 days were cohort days (fewer early on)
    reviewers_today: list[tuple[str, str, int]] = field(default_factory=list)
    #: Every learner in row order: a :class:`MemberRisk`, or a clearly fine learner's
    #: ``(row, joined_day, days_quiet)`` until :attr:`members` builds it with ``_fine``.
    _rows: list[Any] = field(default_factory=list, repr=False)
    _flagged: list[MemberRisk] = field(default_factory=list, repr=False)
    _fine: Any = field(default=None, repr=False, compare=False)
    _sorted: bool = field(default=False, repr=False, compare=False)  # _flagged is in order

    @property
    def members(self) -> list[MemberRisk]:
        """Every learner's result, in the order the rows were read."""
        if self._fine is not None:
            make = self._fine
            self._rows = [m if type(m) is MemberRisk else make(*m) for m in self._rows]
            self._fine = None
        return self._rows

    def names(self, only: Collection[str] | None = None) -> dict[str, str]:
        """Member id to display name, for every learner or ``only`` these (without building
        the results)."""
        pairs = (
            (m.member_id, m.name) if type(m) is MemberRisk else (m[0].member_id, m[0].name)
            for m in self._rows
        )
        return dict(pairs) if only is None else {i: n for i, n in pairs if i in only}

    @property
    def flagged(self) -> list[MemberRisk]:
        """Flagged learners, highest risk first, then most signals, longest quiet."""
        if not self._sorted:  # sorted once (the digest asks twice per group)
            self._flagged.sort(
                key=lambda m: (-m.level, -len(m.fired), -m.days_quiet, m.name, m.member_id)
            )
            self._sorted = True
        return list(self._flagged)


_STAGE_CODES = frozenset(s.value for s in Stage)
_SIGNAL_CODES = frozenset(s.value for s in Signal)
_THIRDS = [Fraction(k / 3) for k in range(4)]


def _mean_of_thirds(counts: list[int]) -> float:
    """``statistics.fmean(k / 3 for k in counts)`` for counts in 0..3, to the last bit (fmean
    is the correctly rounded exact sum over n; so is this), without a float per learner."""
    exact = sum(_THIRDS[k] * counts.count(k) for k in (1, 2, 3))
    return float(exact) / len(counts)


@lru_cache(maxsize=512)
def _month_day(day: date) -> str:
    """``MM-DD`` (strftime is slow enough to show in a pass over 80,000 learners)."""
    return day.strftime("%m-%d")


def _bit(mask: int, i: int) -> bool:
    return i >= 0 and bool(mask >> i & 1)


def _count(mask: int, lo: int, hi: int) -> int:
    """Set bits ``lo..hi`` (inclusive, ``lo <= hi``)."""
    if hi < lo:
        return 0
    return ((mask >> lo) & ((1 << (hi - lo + 1)) - 1)).bit_count()


def _run_from(mask: int, i: int) -> int:
    """Consecutive set bits starting at bit ``i`` going back in time."""
    inv = ~(mask >> i)
    return (inv & -inv).bit_length() - 1


def _lowest(mask: int) -> int | None:
    """Index of the lowest set bit (the most recent day), or None."""
    return (mask & -mask).bit_length() - 1 if mask else None


def current_streak(checkin_mask: int) -> int:
    """The live streak: through today, or through yesterday while today is still open."""
    return _run_from(checkin_mask, 0) if _bit(checkin_mask, 0) else _run_from(checkin_mask, 1)


@dataclass(frozen=True)
class Baselines:
    """Group-wide fallbacks for learners without enough own history."""

    checkin_rate3: float  # mean check-in rate over the 3 days ending yesterday
    chars_per_day3: float  # median meaningful chars per day over those 3 days


# The explanations of the common signals depend on a few small numbers: each distinct one is
# formatted once (a nightly pass fires about 200,000 signals). Fired is frozen, so sharing is safe.


@lru_cache(maxsize=256)
def _silence(days_quiet: int) -> Fired:
    return Fired(Signal.SILENCE, f"已经{days_quiet}天没有在群里发言")


@lru_cache(maxsize=4096)
def _checkin_drop(recent: int, prev_days: int, prev: int, ratio: float) -> Fired | None:
    """Signal 2 against the learner's own previous ``prev_days`` (``prev`` check-ins)."""
    rate3 = recent / 3
    base = prev / prev_days
    if base > 0 and rate3 < base * ratio:
        return Fired(
            Signal.CHECKIN_DROP, f"近3天打卡率{rate3:.0%}，明显低于之前{prev_days}天的{base:.0%}"
        )
    return None


@lru_cache(maxsize=4096)
def _checkin_drop_group(recent: int, base: float, ratio: float) -> Fired | None:
    """Signal 2 against the group's check-in rate (too little own history)."""
    rate3 = recent / 3
    if base > 0 and rate3 < base * ratio:
        return Fired(Signal.CHECKIN_DROP, f"近3天打卡率{rate3:.0%}，明显低于本群同期平均{base:.0%}")
    return None


@lru_cache(maxsize=4096)
def _streak_broken(run: int, last: date) -> Fired:
    return Fired(Signal.STREAK_BROKEN, f"连续打卡{run}天后中断（最后一次在{_month_day(last)}）")


@lru_cache(maxsize=256)
def _no_checkin(missed: int) -> Fired:
    return Fired(Signal.NO_CHECKIN, f"已经连续{missed}天没有打卡")


@lru_cache(maxsize=1024)
def _no_intro(present: int) -> Fired:
    return Fired(Signal.NO_INTRO, f"入群{present}天还没有做自我介绍")


@lru_cache(maxsize=8192)
def _volume_drop(recent: float, whom: str, base: float, ratio: float) -> Fired:
    """Signal 6's explanation (formatting floats is dear; 48,000 fire at 1,000 groups, most of
    them against a group median or with a baseline another learner had)."""
    return Fired(
        Signal.VOLUME_DROP,
        f"近3天日均发言{recent:.0f}字，不到{whom}（{base:.0f}字）的{ratio:.0%}",
    )


def signals_of(
    agg: Learner,
    row: Learner,
    cohort: CohortSettings,
    rules: RadarSettings,
    today: date,
    joined_day: date,
    group: Baselines,
    last_seen_day: date | None,
    latest_nudge: Nudge | None,
    progress: tuple[float, float] | None,
) -> tuple[list[Fired], int]:
    """The signals that fire for one learner today, and their days quiet."""
    # The bit helpers above are written out inline here: 80,000 learners a night go through.
    fired: list[Fired] = []
    start = cohort.start_date
    n = (today - start).days + 1  # cohort.cohort_day(today)
    running = 1 <= n <= cohort.length_days
    eff = joined_day if joined_day > start else start
    present = (today - eff).days + 1  # days in the cohort so far, today included
    cm = agg.checkin_mask
    mm = agg.message_mask
    checked_today = cm & 1

    # Days quiet: since the last message (today counts as 0).
    days_quiet = present
    latest_msg = (mm & -mm).bit_length() - 1  # -1: no message in the window
    if latest_msg >= 0 and latest_msg < present:
        days_quiet = latest_msg
    elif last_seen_day is not None and last_seen_day >= eff:
        days_quiet = (today - last_seen_day).days
    if days_quiet < 0:
        days_quiet = 0

    # 1. No message for N days while the cohort runs.
    if running and days_quiet >= rules.silence_days and not (mm | cm) & 1:
        fired.append(_silence(days_quiet))

    if running and not checked_today:
        if present >= 4:  # the 3 completed days before today are all inside the cohort
            # 2. Check-in rate of the last 3 days below half of the learner's previous 7 days.
            recent3 = ((cm >> 1) & 7).bit_count()
            prev_days = min(7, present - 4)
            prev = ((cm >> 4) & ((1 << prev_days) - 1)).bit_count() if prev_days > 0 else 0
            if prev_days >= 3 and prev > 0:
                drop = _checkin_drop(recent3, prev_days, prev, rules.checkin_drop_ratio)
            else:
                # No baseline of their own (too early, or no check-in at all): the group's, as
                # for message volume. A learner who never checks in stays measured against it
                # instead of against their own zero, which made them look better after a week.
                drop = _checkin_drop_group(recent3, group.checkin_rate3, rules.checkin_drop_ratio)
            if drop is not None:
                fired.append(drop)

        if not cm & 2:
            # 3. A streak of >= 3 broken.
            older = cm >> 2
            if older:
                last = (older & -older).bit_length() + 1  # the latest check-in before yesterday
                if last < present:
                    inv = ~(cm >> last)
                    run = (inv & -inv).bit_length() - 1
                    if run >= rules.broken_streak_min:
                        fired.append(_streak_broken(run, today - timedelta(days=last)))
            # 4. No check-in for 2+ learning days.
            before = cm >> 1
            missed = (before & -before).bit_length() - 1 if before else store.WINDOW_DAYS - 1
            if missed > present - 1:
                missed = present - 1
            if missed >= rules.missed_checkin_days:
                fired.append(_no_checkin(missed))

    # 5. Never introduced themselves by day 2.
    if running and not row.intro_done and present > rules.intro_by_day:
        fired.append(_no_intro(present))

    # 6. Message volume below 30% of their own baseline.
    if present >= 4 and n <= cohort.length_days + 14:
        recent = agg.chars_recent / 3
        before_days = min(present, store.WINDOW_DAYS) - 4
        if before_days >= 3 and agg.chars_before > 0:
            base, whom = agg.chars_before / before_days, "自己平时"
        else:
            base, whom = group.chars_per_day3, "本群同期中位数"
        if (
            base > 0
            and recent < base * rules.volume_ratio
            and agg.chars_today < base * rules.volume_ratio
        ):
            fired.append(_volume_drop(recent, whom, base, rules.volume_ratio))

    # 7. Ignored the last nudge: the latest settled one (a newer one may still be open) had no
    # activity within 72 h, and there has been none since.
    if latest_nudge is not None and latest_nudge.worked is False:
        since = (today - latest_nudge.day).days
        if since >= 1 and _count(agg.active_mask, 0, since - 1) == 0:
            fired.append(
                Fired(
                    Signal.IGNORED_NUDGE,
                    f"{latest_nudge.day:%m-%d}的私信提醒后{rules.ignored_nudge_hours}小时内没有回应",
                )
            )

    # 8. Imported course progress below the thresholds.
    if progress is not None:
        completion, homework = progress
        if completion < rules.min_completion or homework < rules.min_homework_rate:
            fired.append(
                Fired(
                    Signal.LOW_PROGRESS,
                    f"完课率{completion:.0%}、作业提交率{homework:.0%}，低于预期",
                )
            )
    return fired, days_quiet


def _left(joined: datetime | str | None, left: datetime | str) -> bool:
    """Whether a membership's leave is its latest event (so the member is gone)."""
    if joined is None:
        return True
    j, lv = store.as_datetime(joined), store.as_datetime(left)
    return j is None or (lv is not None and lv >= j)


def _local_day(at: datetime | None, cohort: CohortSettings) -> date | None:
    return None if at is None else learning_day(at, cohort.timezone, cohort.day_start_hour)


@collector_paused()
def evaluate(
    session: Session,
    settings: Settings,
    cohort: CohortSettings,
    chat_ids: Sequence[str],
    today: date,
    persist: bool = True,
    unsaved: list[dict[str, Any]] | None = None,
) -> dict[str, GroupRadar]:
    """Every learner's risk in the given groups of one cohort on learning day ``today``.

    A handful of queries for any number of groups. With ``persist`` the flag states are saved
    (hysteresis); without, stored states are read but nothing is written (terminal previews).
    ``unsaved`` (with ``persist``): the changed states are appended to it instead, for the
    caller to save in the same transaction (``store.saving_flags``, while it renders).
    """
    rules = settings.radar
    wanted = set(chat_ids)
    staff = {
        g.chat_id: set(g.leaders) | set(g.teachers) for g in cohort.groups if g.chat_id in wanted
    }
    anyone_staff = set().union(*staff.values())
    # The learners by group (staff and members who left are not learners), in row order.
    by_group: dict[str, list[Learner]] = {c: [] for c in chat_ids}
    rows: list[Learner] = []
    for r in store.learners(session, chat_ids, today, cohort.start_date):
        member_id = r.member_id
        if member_id in anyone_staff and member_id in staff.get(r.chat_id, ()):
            continue
        if r.left_at is not None and _left(r.joined_at, r.left_at):
            continue
        rows.append(r)
        group = by_group.get(r.chat_id)
        if group is None:
            group = by_group[r.chat_id] = []
        group.append(r)
    flags = store.flags_of(session, chat_ids)
    latest = nudge_store.latest_per_member(session, chat_ids)
    progress = (
        store.progress_of(session, [r.member_id for r in rows])
        if store.has_progress(session)
        else {}
    )
    overrides = store.stage_overrides(session, cohort.id)
    stage_today = stage_of(cohort, today)

    joined_days: dict[Any, date] = {}
    silence_bits = (1 << rules.silence_days) - 1
    drop_need = 3 * rules.checkin_drop_ratio  # check-ins in 3 days that no baseline can beat
    n_today = cohort.cohort_day(today)
    fast_ok = 1 <= n_today <= cohort.length_days and n_today > rules.intro_by_day

    out: dict[str, GroupRadar] = {}
    to_save: list[dict[str, Any]] = []
    clear_days = rules.clear_after_active_days
    volume_ratio = rules.volume_ratio
    days7 = max(0, min(7, n_today - 1))
    mask7 = ((1 << days7) - 1) << 1
    # Per join day: (days present in the cohort so far, window days before the last 3).
    presence: dict[date, tuple[int, int]] = {}

    def stage_for(member_id: str) -> Stage:
        code = overrides.get(member_id) if overrides else None
        return Stage(code) if code is not None and code in _STAGE_CODES else stage_today

    def fine_risk(r: Learner, joined: date, quiet: int) -> MemberRisk:
        """A clearly fine learner's result (built only when asked for, see GroupRadar)."""
        cm = r.checkin_mask
        streak = cm if cm & 1 else cm >> 1
        return MemberRisk(
            r.chat_id,
            r.member_id,
            r.name,
            r.kind,
            r.owner_userid,
            stage_for(r.member_id),
            0,
            [],
            quiet,
            (streak ^ (streak + 1)).bit_length() - 1,
            False,
            False,
            bool((r.message_mask | cm) & 1),
            bool(cm & 1),
            joined,
        )

    for chat_id, members in by_group.items():
        gr = GroupRadar(chat_id=chat_id, cohort_id=cohort.id, day=today, total=len(members))
        gr._fine = fine_risk
        rows_out = gr._rows
        flagged_out = gr._flagged
        if members:
            cms = [r.checkin_mask for r in members]
            gr.active_today = sum((r.message_mask | r.checkin_mask) & 1 for r in members)
            gr.messages_today = sum(r.messages_today for r in members)
            gr.checkins_today = sum(c & 1 for c in cms)
            gr.checkin_days7 = days7
            if days7:
                gr.checkin_avg7 = sum((c & mask7).bit_count() for c in cms) / days7
            rate3 = _mean_of_thirds([((c >> 1) & 7).bit_count() for c in cms])
            chars3 = statistics.median(r.chars_recent / 3 for r in members)
        else:
            rate3 = chars3 = 0.0
        base = Baselines(rate3, chars3)
        # Most reviews first, then by name, then by member id (plain tuples sort without a key
        # function; equal names were left in row order, which is member id order on SQLite).
        reviewers = sorted(
            [(-r.reviews_today, r.name, r.member_id) for r in members if r.reviews_today > 0]
        )
        gr.reviewers_today = [(m, name, -c) for c, name, m in reviewers[:5]]
        group_limit = chars3 * volume_ratio
        for r in members:
            # One unpacking instead of a dozen attribute reads (200,000 learners a night).
            (_, member_id, _, _, _, joined_at, _, _, intro, mm, cm, recent, before, _, chars_today,
             _) = r  # fmt: skip
            am = mm | cm
            joined = joined_days.get(joined_at)
            if joined is None:
                joined = _local_day(store.as_datetime(joined_at), cohort) or cohort.start_date
                joined_days[joined_at] = joined
            if flags or latest:
                key = (chat_id, member_id)
                state = flags.get(key)
                nudge = latest.get(key)
            else:  # the first night, or a cohort nobody was ever flagged or nudged in
                state = nudge = None
            prog = progress.get(member_id) if progress else None
            fine = (
                fast_ok
                and (state is None or not state.flagged)
                and mm & silence_bits
                and (cm & 1 or ((cm >> 1) & 7).bit_count() >= drop_need)
                and cm & 3
                and intro
                and (nudge is None or nudge.worked is not False)
                and prog is None
            )
            if fine:
                # A cheap upper bound for signal 6 (volume drop).
                known = presence.get(joined)
                if known is None:
                    present = (today - max(cohort.start_date, joined)).days + 1
                    known = presence[joined] = (present, min(present, store.WINDOW_DAYS) - 4)
                if known[0] >= 4:
                    if known[1] >= 3 and before > 0:
                        limit = before / known[1] * volume_ratio
                    else:
                        limit = group_limit
                    fine = not (recent / 3 < limit and chars_today < limit)
            if fine:
                # Clearly fine (none of the eight signals can fire): skip the full rules.
                quiet = (mm & -mm).bit_length() - 1
                if state is None:
                    # Never flagged: not flagged now, nothing to store; built when asked.
                    rows_out.append((r, joined, quiet))
                    continue
                fired: list[Fired] = []
            else:
                last_seen = (
                    _local_day(store.as_datetime(r.last_seen_at), cohort) if mm == 0 else None
                )
                fired, quiet = signals_of(
                    r, r, cohort, rules, today, joined, base, last_seen, nudge, prog
                )
            prev = False
            if state is not None:
                prev = state.prev_flagged if state.day == today else state.flagged
            holding = False
            level = level_of(len(fired))
            if not fired and prev:
                # The live run of active days (through today, or through yesterday).
                run = am if am & 1 else am >> 1
                active_run = (run ^ (run + 1)).bit_length() - 1
                if active_run < clear_days:
                    holding = True
                    level = max(1, state.level if state is not None else 1)
                    note = f"恢复观察中：已连续活跃{active_run}天，满{clear_days}天解除"
                    codes = state.signals.split(",") if state is not None and state.signals else []
                    fired = [Fired(Signal(c), note) for c in codes if c in _SIGNAL_CODES]
            flagged = bool(fired) or holding
            streak = cm if cm & 1 else cm >> 1
            risk = MemberRisk(
                chat_id,
                member_id,
                r.name,
                r.kind,
                r.owner_userid,
                stage_for(member_id),
                level,
                fired,
                quiet,
                (streak ^ (streak + 1)).bit_length() - 1,
                flagged,
                holding,
                bool(am & 1),
                bool(cm & 1),
                joined,
            )
            rows_out.append(risk)
            if flagged:
                flagged_out.append(risk)
            if persist and (flagged or state is not None):
                since = None
                if flagged:
                    since = state.since if (state is not None and prev and state.since) else today
                # Signal is a StrEnum: joining the members joins their codes.
                signals = ",".join([f.signal for f in fired])
                if state is None or state != (today, flagged, prev, level, signals, since):
                    to_save.append(
                        {
                            "chat_id": chat_id,
                            "member_id": member_id,
                            "day": today,
                            "flagged": flagged,
                            "prev_flagged": prev,
                            "level": level,
                            "signals": signals,
                            "since": since,
                        }
                    )
        out[chat_id] = gr
    if persist and to_save:
        if unsaved is not None:
            unsaved.extend(to_save)
        else:
            store.save_flags(session, to_save)
    return out
