"""Check-in detection (SPEC §3): config patterns, homework submissions, one per learning day,
only within the cohort's dates; a recalled check-in is undone and the next qualifying message of
that day takes its place."""

from __future__ import annotations

from datetime import timedelta

from bot.config import CheckinRules, CohortSettings
from bot.context import Context
from bot.dispatcher import Router, in_cohort_group
from bot.updates import Event, Update
from handlers.commands import Call, CommandSet, reply
from handlers.text import has_link, strip_leading_mentions
from storage import checkins, messages
from storage.checkins import KIND_CHECKIN, KIND_HOMEWORK

router = Router("checkins")
commands = CommandSet("checkins")

#: Message types that carry an attachment a homework submission can be.
ATTACHMENT_TYPES = frozenset({"image", "file", "video", "link", "doc", "docmsg", "mixed"})


def detect(cohort: CohortSettings, text: str, msg_type: str) -> str | None:
    """What kind of check-in a message is by its own content, or None."""
    rules = cohort.checkins
    text = strip_leading_mentions(text)
    if text and is_checkin(rules, text):
        return KIND_CHECKIN
    if (
        text
        and any(p.search(text) for p in rules.homework)
        and (has_link(text) or msg_type in ATTACHMENT_TYPES)
    ):
        return KIND_HOMEWORK
    return None


def is_checkin(rules: CheckinRules, text: str) -> bool:
    """Whether a message (leading @-mentions stripped) is a check-in by the patterns.

    A negated or asked-about 打卡 ("还没#打卡", "怎么打卡") is blanked out first, so it matches
    nothing. A message that then opens with a check-in form counts whatever follows ("#打卡
    今天学了…？我还有点不懂"); any other match is refused when the message is a question
    ("打卡群里有人吗", "请问Day 2的作业要在打卡的时候一起交吗").
    """
    # Most messages match no pattern: they pay for one search per pattern and nothing more.
    if not any(p.search(text) for p in rules.patterns):
        return False
    text = text.lstrip()
    for ignored in rules.ignored:
        text = ignored.sub(" ", text)
    matched = False
    for pattern in rules.patterns:
        found = pattern.search(text)
        if found is None:
            continue
        if found.start() == 0 and _set_off(text, found.end()):
            return True
        matched = True
    return matched and not any(q.search(text) for q in rules.questions)


def _set_off(text: str, end: int) -> bool:
    """Whether a check-in form ending at ``end`` stands apart from what follows: at the end of
    the message, before a space or punctuation, or closed by a bracket ("【打卡】今天…").
    "打卡 今天…" is the command form; "打卡是每天几点截止" is a sentence about 打卡."""
    return end > 0 and (end == len(text) or not text[end].isalnum() or not text[end - 1].isalnum())


def _announced_homework(update: Update, ctx: Context, cohort: CohortSettings) -> bool:
    """An image or file right after the same member wrote "作业" is a homework submission."""
    window = cohort.checkins.homework_window_minutes
    if update.msg_type not in ATTACHMENT_TYPES or window <= 0:
        return False
    recent = messages.recent_of_member(
        ctx.session,
        update.chat_id,
        update.sender_id,
        update.sent_at - timedelta(minutes=window),
        update.sent_at,
    )
    return any(
        m.msg_id != update.message_id
        and m.text
        and any(p.search(m.text) for p in cohort.checkins.homework)
        for m in recent
    )


@router.message(in_cohort_group)
async def detect_checkin(update: Update, ctx: Context) -> None:
    cohort, day = ctx.cohort, ctx.facts.day
    assert cohort is not None and day is not None
    if ctx.group is not None and update.sender_id in ctx.group.teachers:
        return  # a teacher showing how to check in is not a learner checking in (SPEC §0)
    kind = detect(cohort, update.text, update.msg_type)
    if kind is None and _announced_homework(update, ctx, cohort):
        kind = KIND_HOMEWORK
    if kind is None:
        return
    key = (update.chat_id, update.sender_id, day)
    if kind == KIND_HOMEWORK:
        ctx.facts.homework = True
        ctx.uow.activity.mark_homework(ctx.uow.writer, update.door.namespace, update.message_id)
        ctx.uow.activity.count(key, homework=1)
    if not 1 <= cohort.cohort_day(day) <= cohort.length_days:
        return
    checkin_id = checkins.add(
        ctx.uow.writer,
        cohort.id,
        update.sender_id,
        day,
        update.chat_id,
        f"{update.door.namespace}:{update.message_id}",
        kind,
        ctx.clock.now(),
    )
    if checkin_id is not None:
        ctx.facts.checkin_id = checkin_id
        ctx.uow.activity.count(key, checkins=1)


@router.event(Event.RECALL, filters=(lambda u, c: c.facts.recalled is not None,))
async def undo_checkin(update: Update, ctx: Context) -> None:
    recalled = ctx.facts.recalled
    assert recalled is not None
    found = checkins.by_message(ctx.session, f"{recalled.namespace}:{recalled.msg_id}")
    if found is None or found.id is None:
        return
    checkins.remove(ctx.session, found.id)
    key = (found.chat_id, found.member_id, found.day)
    ctx.uow.activity.count(key, checkins=-1)
    cohort = ctx.settings.cohort(found.cohort_id)
    for other in messages.of_member_on_day(ctx.session, found.chat_id, found.member_id, found.day):
        kind = KIND_HOMEWORK if other.homework else detect(cohort, other.text or "", other.msg_type)
        if kind is None:
            continue
        new_id = checkins.add(
            ctx.session,
            cohort.id,
            found.member_id,
            found.day,
            found.chat_id,
            f"{other.namespace}:{other.msg_id}",
            kind,
            ctx.clock.now(),
        )
        if new_id is not None:
            ctx.uow.activity.count(key, checkins=1)
        break


@commands.command("打卡", "checkin", usage="打卡 <今天的学习内容>", summary="打卡，记录今天的学习")
async def checkin_command(update: Update, ctx: Context, call: Call) -> None:
    """The check-in itself happened in :func:`detect_checkin`; this only answers."""
    cohort, day = ctx.cohort, ctx.facts.day
    if cohort is None or day is None:
        await reply(update, ctx, "请在训练营群里打卡哦。")
        return
    if ctx.group is not None and update.sender_id in ctx.group.teachers:
        await reply(update, ctx, "老师的打卡不计入学员的打卡、连续天数和积分。")
        return
    cohort_day = cohort.cohort_day(day)
    if cohort_day < 1:
        start = cohort.start_date.strftime("%m-%d")
        await reply(update, ctx, f"训练营 {start} 开营，从那天起打卡才计入，到时见～")
        return
    if cohort_day > cohort.length_days:
        end = cohort.end_date.strftime("%m-%d")
        await reply(update, ctx, f"训练营已于 {end} 结营，打卡不再计入，记录保持在结营那天。")
        return
    days = [c.day for c in checkins.of_member(ctx.session, cohort.id, update.sender_id)]
    streak = checkins.cohort_streak(days, day, cohort)
    if ctx.facts.checkin_id is not None:
        text = f"✅ 打卡成功！第 {cohort_day} 天，已连续打卡 {streak.current} 天。"
    elif streak.checked_today:
        text = f"今天已经打过卡啦，已连续打卡 {streak.current} 天，明天继续～"
    else:
        # "/打卡是几点截止？": a question about 打卡 is not one (see :func:`is_checkin`).
        text = "这条没有记为打卡（像是在提问）。打卡请写：打卡 今天学了什么"
    await reply(update, ctx, text, mentions=[update.sender_id])
