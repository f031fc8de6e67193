"""The group's rhythm (SPEC §6): welcome and self-introduction, kick-off, daily topics, games,
晒卡日, morning agenda, evening wrap, discussion recaps, icebreaker invitations, 破冰 and 公告.

Scheduled posts are :class:`~bot.jobs.DailyJob` functions (see :func:`jobs`) and timers (see
:data:`TIMERS`); reactions to messages and joins are routes on :data:`router`; leader commands are
in :data:`commands`. Everything asks ``ctx.clock`` for now; nothing is posted in quiet hours.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import func, select, update
from sqlmodel import col

import scripts_library.rhythm as words
from bot.config import CohortSettings, Settings
from bot.context import Context
from bot.dispatcher import Router, in_cohort_group
from bot.jobs import DailyJob, JobFn, Run, cohort_days, per_group, quiet_hours, quiet_now
from bot.outbound import Channel, Outbound
from bot.updates import Event, Update
from handlers import keywords
from handlers.commands import Call, CommandSet, Role, UsageError, reply
from handlers.text import strip_leading_mentions
from storage import rhythm as store
from storage import roster, schedule
from storage.checkins import CheckIn
from storage.messages import Message
from storage.uow import UnitOfWork

router = Router("rhythm")
commands = CommandSet("rhythm")

#: Points-ledger rule names used through the rewards seam (:class:`bot.context.Rewards`).
RULE_SELF_INTRO = "self_intro"  # +5 in SPEC §4
RULE_QUIZ_FIRST = "quiz_first_correct"  # +3 in SPEC §4

#: A join older than this (relative to the clock) is history being replayed: no welcome.
WELCOME_MAX_AGE = timedelta(hours=1)
#: A recap needs at least this many text messages in the topic window.
RECAP_MIN_MESSAGES = 3
RECAP_KEYWORDS = 5
RECAP_HIGHLIGHTS = 3
#: Messages longer than this are never taken as a game answer.
MAX_ANSWER_CHARS = 60

TIMER_WELCOME = "rhythm.welcome"
TIMER_REVEAL = "rhythm.reveal"
TIMER_RECAP = "rhythm.recap"
TIMER_POST = "rhythm.post"


# --- helpers ------------------------------------------------------------------------------


def _quiet_end(ctx: Context, cohort: CohortSettings) -> datetime:
    return quiet_hours(ctx.settings).postpone(ctx.clock.now(), cohort.timezone)


async def _post(
    ctx: Context, chat_id: str, text: str, key: str, mentions: Sequence[str] = ()
) -> None:
    await ctx.send(
        Outbound(channel=Channel.GROUP, to=chat_id, text=text, mentions=tuple(mentions), key=key)
    )


def _run_key(run: Run) -> str:
    return f"{run.job_id}@{run.scheduled_for:%Y%m%dT%H%M%S}"


def _mention_text(ctx: Context, member_ids: Sequence[str]) -> str:
    names = roster.names(ctx.session, member_ids)
    return " ".join(f"@{names[m]}" for m in member_ids)


def intro_template(settings: Settings) -> str:
    """The self-introduction template, one line per configured field."""
    return "\n".join(words.text("template_line", field=f) for f in settings.rhythm.intro_fields)


def _staff(ctx: Context, chat_id: str) -> list[str]:
    group = ctx.settings.group(chat_id)
    return [*group.leaders, *group.teachers] if group else []


def _invite(ctx: Context, chat_id: str) -> tuple[str, list[str]]:
    """The invite line for never-spoken members not invited within N days, and their ids;
    the invitations are recorded."""
    r = ctx.settings.rhythm
    now = ctx.clock.now()
    found = store.invitable(
        ctx.session,
        chat_id,
        now - timedelta(days=r.invite_every_days),
        _staff(ctx, chat_id),
        r.invite_max,
    )
    if not found:
        return "", []
    ids = [m for m, _ in found]
    store.record_invitations(ctx.session, chat_id, ids, now)
    mentions = " ".join(f"@{name}" for _, name in found)
    return words.text("invite", mentions=mentions), ids


# --- answers ------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Compare answers loosely: NFKC (full-width -> half-width), case-folded, without
    punctuation, symbols or spaces. ``"Ｂｕｇ！"`` and ``" bug "`` are the same answer."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSZC")


def is_correct(text: str, answers: Sequence[str]) -> bool:
    """Whether a message answers correctly: it equals an accepted answer once normalized, or is a
    short sentence containing one (``答案是木星``); one-character answers must match exactly."""
    said = normalize_answer(strip_leading_mentions(text))
    if not said:
        return False
    for answer in answers:
        wanted = normalize_answer(answer)
        if not wanted:
            continue
        if said == wanted:
            return True
        if len(wanted) >= 2 and wanted in said and len(said) <= len(wanted) + 6:
            return True
    return False


# --- recap keywords -----------------------------------------------------------------------


def top_keywords(texts: Sequence[str], k: int = RECAP_KEYWORDS) -> list[str]:
    """The ``k`` most characteristic words of a discussion (:func:`handlers.keywords.topics`)."""
    return keywords.topics(texts, k)


def most_replied(messages: Sequence[Message], k: int = RECAP_HIGHLIGHTS) -> list[tuple[str, int]]:
    """``(msg_id, replies)`` of the messages quoted most often, most first (ties: oldest)."""
    counts = Counter(m.quoted_msg_id for m in messages if m.quoted_msg_id)
    order = {m.msg_id: i for i, m in enumerate(messages)}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], order.get(kv[0] or "", 10**9)))
    return [(str(mid), n) for mid, n in ranked[:k]]


# --- daily jobs ---------------------------------------------------------------------------


def jobs(settings: Settings) -> list[DailyJob]:
    """The rhythm's daily jobs, one of each per configured group (none when disabled)."""
    r = settings.rhythm
    if not r.enabled:
        return []

    def showcase_days(cohort: CohortSettings) -> Any:
        learning = cohort_days(cohort)
        return lambda d: learning(d) and d.isoweekday() == r.showcase_weekday

    return [
        *per_group(
            settings, "rhythm.kickoff", r.kickoff_time, kickoff, lambda c: cohort_days(c, 1)
        ),
        *per_group(settings, "rhythm.morning", r.morning_time, morning_agenda),
        *per_group(settings, "rhythm.topic", r.topic_time, daily_topic),
        *per_group(settings, "rhythm.game", r.game_time, daily_game),
        *per_group(settings, "rhythm.showcase", r.showcase_time, showcase, showcase_days),
        *per_group(settings, "rhythm.evening", r.evening_time, evening_wrap),
    ]


def _cohort_day(ctx: Context, run: Run) -> int:
    assert ctx.cohort is not None
    return ctx.cohort.cohort_day(run.local_date)


async def kickoff(ctx: Context, run: Run) -> None:
    """Day 1: the cohort starts."""
    assert ctx.cohort is not None and ctx.group is not None and run.chat_id
    text = words.text(
        "kickoff",
        course=ctx.cohort.course,
        group=ctx.group.name or ctx.cohort.course,
        days=ctx.cohort.length_days,
        template=intro_template(ctx.settings),
    )
    await _post(ctx, run.chat_id, text, _run_key(run))


def _format_date(day: date) -> str:
    return f"{day.month}月{day.day}日"


async def morning_agenda(ctx: Context, run: Run) -> None:
    """Today's lesson and deadlines (``[[rhythm.agenda]]`` in the config)."""
    assert ctx.cohort is not None and run.chat_id
    n = _cohort_day(ctx, run)
    agenda = ctx.settings.rhythm.agenda_for(ctx.cohort.id, n)
    lesson = agenda.lesson if agenda else words.text("morning_default_lesson", day=n)
    deadlines = "；".join(agenda.deadlines) if agenda and agenda.deadlines else ""
    text = words.text(
        "morning",
        day=n,
        date=_format_date(run.local_date),
        lesson=lesson,
        deadlines=deadlines or words.text("morning_no_deadline"),
    )
    await _post(ctx, run.chat_id, text, _run_key(run))


def checkins_today(ctx: Context, chat_id: str, day: date) -> int:
    """Check-ins counted in a group on a learning day."""
    assert ctx.cohort is not None
    stmt = (
        select(func.count())
        .select_from(CheckIn)
        .where(
            col(CheckIn.cohort_id) == ctx.cohort.id,
            col(CheckIn.chat_id) == chat_id,
            col(CheckIn.day) == day,
        )
    )
    return int(ctx.session.scalar(stmt) or 0)


async def evening_wrap(ctx: Context, run: Run) -> None:
    """The day's close, with today's check-in count (a farewell on the cohort's last day)."""
    assert ctx.facts.day is not None and run.chat_id
    assert ctx.cohort is not None
    count = checkins_today(ctx, run.chat_id, ctx.facts.day)
    day = _cohort_day(ctx, run)
    if day == ctx.cohort.length_days:
        text = words.text("evening_last", day=day, count=count, course=ctx.cohort.course)
    else:
        text = words.text("evening", day=day, count=count)
    await _post(ctx, run.chat_id, text, _run_key(run))


async def showcase(ctx: Context, run: Run) -> None:
    """The weekly 晒卡日 (seed 001)."""
    assert run.chat_id
    week = (_cohort_day(ctx, run) - 1) // 7 + 1
    await _post(ctx, run.chat_id, words.text("showcase", week=week), _run_key(run))


async def daily_topic(ctx: Context, run: Run) -> None:
    """The day's topic from the rotating pool, inviting never-spoken members; a recap follows
    after the topic window."""
    assert run.chat_id
    chat_id = run.chat_id
    now = ctx.clock.now()
    pool = {t.id: t.text for t in words.topics()}
    topic_id = store.next_from_pool(ctx.session, chat_id, "topic", list(pool), now)
    invite, invited = _invite(ctx, chat_id)
    text = words.text("topic", day=_cohort_day(ctx, run), topic=pool[topic_id], invite=invite)
    await _post(ctx, chat_id, text, _run_key(run), invited)
    window = timedelta(minutes=ctx.settings.rhythm.topic_window_minutes)
    schedule.add_timer(
        ctx.session,
        f"recap:{chat_id}:{run.local_date.isoformat()}",
        TIMER_RECAP,
        now + window,
        now,
        chat_id,
        {"topic": pool[topic_id], "since": now.isoformat(), "until": (now + window).isoformat()},
    )


async def daily_game(ctx: Context, run: Run) -> None:
    """A riddle, quiz or word guess (cycling by day); the answer is revealed after the window."""
    assert run.chat_id
    order = words.game_order()
    kind = order[(_cohort_day(ctx, run) - 1) % len(order)]
    await start_game(ctx, run.chat_id, kind, _run_key(run))


async def start_game(ctx: Context, chat_id: str, kind: str, key: str) -> store.Game:
    """Post the next item of a game kind and schedule its reveal."""
    now = ctx.clock.now()
    items = {r.id: r for r in words.riddles() if r.kind == kind}
    item = items[store.next_from_pool(ctx.session, chat_id, f"game.{kind}", list(items), now)]
    minutes = ctx.settings.rhythm.game_window_minutes
    game = store.Game(
        chat_id=chat_id,
        kind=kind,
        item_id=item.id,
        question=item.question,
        answers=_json_list(item.answers),
        posted_at=now,
        reveal_at=now + timedelta(minutes=minutes),
    )
    ctx.session.add(game)
    ctx.session.flush()
    text = words.text("game", title=words.game_title(kind), question=item.question, minutes=minutes)
    await _post(ctx, chat_id, text, key)
    schedule.add_timer(
        ctx.session,
        f"reveal:{game.id}",
        TIMER_REVEAL,
        game.reveal_at,
        now,
        chat_id,
        {"game_id": game.id},
    )
    return game


def _json_list(items: Sequence[str]) -> str:
    import json

    return json.dumps(list(items), ensure_ascii=False)


# --- timers -------------------------------------------------------------------------------


async def reveal(ctx: Context, run: Run) -> None:
    """Reveal a game's answer (and its winner)."""
    game = ctx.session.get(store.Game, int(run.payload["game_id"]))
    if (
        game is None
        or game.id is None
        or not store.mark_revealed(ctx.session, game.id, ctx.clock.now())
    ):
        return
    if game.winner_id:
        name = roster.names(ctx.session, [game.winner_id])[game.winner_id]
        winner = words.text("game_winner", name=name)
    else:
        winner = words.text("game_no_winner")
    text = words.text("game_reveal", answer=game.answer_list[0], winner=winner)
    await _post(ctx, game.chat_id, text, f"reveal:{game.id}")


async def flush_welcome(ctx: Context, run: Run) -> None:
    """Welcome every newcomer of the batch in one message."""
    assert run.chat_id and ctx.cohort is not None and ctx.group is not None
    ids = store.take_pending_welcomes(ctx.session, run.chat_id, ctx.clock.now())
    if not ids:
        return
    fields: dict[str, object] = {
        "mentions": _mention_text(ctx, ids),
        "group": ctx.group.name or ctx.cohort.course,
        "course": ctx.cohort.course,
    }
    if _all_introduced(ctx, run.chat_id, ids):
        text = words.text("welcome_introduced", **fields)
    else:
        text = words.text("welcome", **fields, template=intro_template(ctx.settings))
    await _post(ctx, run.chat_id, text, _run_key(run), ids)


def _all_introduced(ctx: Context, chat_id: str, ids: Sequence[str]) -> bool:
    """Whether every one of these members has introduced themselves in the group already."""
    m = roster.Membership
    stmt = select(func.count()).where(
        col(m.chat_id) == chat_id, col(m.member_id).in_(ids), col(m.intro_done_at).is_not(None)
    )
    return int(ctx.session.scalar(stmt) or 0) == len(set(ids))


async def recap(ctx: Context, run: Run) -> None:
    """After a topic window: its top keywords and most-replied messages."""
    assert run.chat_id
    since = datetime.fromisoformat(run.payload["since"])
    until = datetime.fromisoformat(run.payload["until"])
    messages = store.window_messages(ctx.session, run.chat_id, since, until)
    texts = [m.text for m in messages if m.text]
    if len(texts) < RECAP_MIN_MESSAGES:
        return
    keywords = top_keywords(texts)
    top = most_replied(messages)
    by_id = {m.msg_id: m for m in messages}
    missing = [mid for mid, _ in top if mid not in by_id]
    if missing:
        stmt = select(Message).where(
            col(Message.chat_id) == run.chat_id, col(Message.msg_id).in_(missing)
        )
        by_id.update({m.msg_id: m for m in ctx.session.scalars(stmt).all()})
    shown = [(by_id[mid], n) for mid, n in top if mid in by_id and by_id[mid].text]
    names = roster.names(ctx.session, [m.sender_id for m, _ in shown])
    lines = [
        words.text(
            "recap_highlight", name=names[m.sender_id], text=_snippet(m.text or ""), replies=n
        )
        for m, n in shown
    ]
    text = words.text(
        "recap",
        topic=run.payload["topic"],
        count=len(texts),
        keywords="、".join(keywords) or "—",
        highlights="\n".join(lines) or words.text("recap_no_highlight"),
    )
    await _post(ctx, run.chat_id, text, _run_key(run))


def _snippet(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def queued_post(ctx: Context, run: Run) -> None:
    """A leader's post that waited for the quiet hours to end."""
    assert run.chat_id
    p = run.payload
    await _post(ctx, run.chat_id, str(p["text"]), str(p["key"]), list(p.get("mentions", [])))


#: Timer kind -> function (wired in :func:`bot.app.timer_kinds`).
TIMERS: dict[str, JobFn] = {
    TIMER_WELCOME: flush_welcome,
    TIMER_REVEAL: reveal,
    TIMER_RECAP: recap,
    TIMER_POST: queued_post,
}


# --- reacting to joins and messages -------------------------------------------------------


@router.event(Event.MEMBER_JOINED, filters=(lambda u, c: c.group is not None,))
async def welcome_on_join(update: Update, ctx: Context) -> None:
    """Queue newcomers for a batched welcome: the first join opens a batch flushed
    ``welcome_batch_seconds`` later (restart-safe: both are rows)."""
    now = ctx.clock.now()
    if update.sent_at < now - WELCOME_MAX_AGE:
        return
    ids = [str(i) for i in (update.event_data.get("member_ids") or [update.sender_id]) if i]
    staff = set(_staff(ctx, update.chat_id))
    ids = [i for i in ids if i not in staff]
    if not ids:
        return
    store.add_pending_welcomes(ctx.session, update.chat_id, ids, update.sent_at)
    if schedule.open_timer(ctx.session, TIMER_WELCOME, update.chat_id) is None:
        due = update.sent_at + timedelta(seconds=ctx.settings.rhythm.welcome_batch_seconds)
        schedule.add_timer(
            ctx.session,
            f"welcome:{update.chat_id}:{update.sent_at:%Y%m%dT%H%M%S.%f}",
            TIMER_WELCOME,
            due,
            now,
            update.chat_id,
        )


def is_self_intro(text: str, fields: Sequence[str]) -> bool:
    """A self-introduction: says ``自我介绍``, or fills in at least two template fields (all of
    them when the template has fewer than two)."""
    if "自我介绍" in text:
        return True
    present = sum(1 for f in fields if f and f in text)
    return bool(fields) and present >= min(2, len(fields))


@router.message(in_cohort_group)
async def self_intro(update: Update, ctx: Context) -> None:
    """Record a member's first self-introduction and reward it once (through the seam)."""
    if not is_self_intro(update.text, ctx.settings.rhythm.intro_fields):
        return
    result = ctx.session.execute(update_intro(update.chat_id, update.sender_id, update.sent_at))
    if result.rowcount:  # type: ignore[attr-defined]
        await ctx.reward(
            update.sender_id, RULE_SELF_INTRO, f"intro:{update.chat_id}:{update.sender_id}"
        )


def update_intro(chat_id: str, member_id: str, at: datetime) -> Any:
    """The statement that marks a membership's self-introduction done, once."""
    m = roster.Membership
    return (
        update(m)
        .where(
            col(m.chat_id) == chat_id, col(m.member_id) == member_id, col(m.intro_done_at).is_(None)
        )
        .values(intro_done_at=at)
    )


@dataclass
class _OpenGame:
    id: int
    posted_at: datetime
    reveal_at: datetime
    answers: list[str]
    won: bool


#: Per unit of work (one ingest batch), every group's open game, looked up once (one query for
#: all groups): games are posted by scheduled runs in their own transactions, never in the
#: middle of a batch.
_OPEN_GAMES: WeakKeyDictionary[UnitOfWork, dict[str, _OpenGame]] = WeakKeyDictionary()


def _open_game(ctx: Context, chat_id: str) -> _OpenGame | None:
    memo = _OPEN_GAMES.get(ctx.uow)
    if memo is None:
        # The writer, not ctx.session: games are not in the activity buffer, and flushing it
        # for every short message would undo the batch's write-behind.
        memo = _OPEN_GAMES[ctx.uow] = {
            chat: _OpenGame(
                game.id, game.posted_at, game.reveal_at, game.answer_list, bool(game.winner_id)
            )
            for chat, game in store.open_games(ctx.uow.writer).items()
            if game.id is not None
        }
    return memo.get(chat_id)


@router.message(in_cohort_group)
async def game_answer(update: Update, ctx: Context) -> None:
    """The first correct answer to the open game wins (rewarded through the seam)."""
    if not update.text or len(update.text) > MAX_ANSWER_CHARS:
        return  # answers are short: most messages skip the game lookup entirely
    game = _open_game(ctx, update.chat_id)
    if game is None or game.won:
        return
    if not game.posted_at <= update.sent_at < game.reveal_at:
        return
    if not is_correct(update.text, game.answers):
        return
    game.won = True
    if not store.set_winner(ctx.uow.writer, game.id, update.sender_id, update.sent_at):
        return
    await ctx.reward(update.sender_id, RULE_QUIZ_FIRST, f"game:{game.id}")
    if not quiet_now(ctx):
        mention = _mention_text(ctx, [update.sender_id])
        await _post(
            ctx,
            update.chat_id,
            words.text("game_won", mention=mention),
            f"game-won:{game.id}",
            [update.sender_id],
        )


# --- leader commands ----------------------------------------------------------------------


async def _post_or_queue(
    update: Update, ctx: Context, text: str, key: str, mentions: Sequence[str] = ()
) -> None:
    """Post now, or outside quiet hours as a timer (and tell the leader when)."""
    if quiet_now(ctx):
        assert ctx.cohort is not None
        when = _quiet_end(ctx, ctx.cohort)
        schedule.add_timer(
            ctx.session,
            key,
            TIMER_POST,
            when,
            ctx.clock.now(),
            update.chat_id,
            {"text": text, "key": key, "mentions": list(mentions)},
        )
        local = when.astimezone(ctx.cohort.timezone)
        await reply(update, ctx, words.text("queued_quiet", when=f"{local:%H:%M}"))
        return
    await _post(ctx, update.chat_id, text, key, mentions)


@commands.command(
    "破冰",
    "icebreaker",
    role=Role.LEADER,
    usage="破冰 [主题]",
    summary="马上发一个破冰话题（不写主题就从话题库里选），并邀请还没发过言的伙伴",
    group_only=True,
)
async def icebreaker(update: Update, ctx: Context, call: Call) -> None:
    """破冰: a topic now (the leader's, or the pool's next), inviting never-spoken members."""
    now = ctx.clock.now()
    topic = call.args
    if not topic:
        pool = {t.id: t.text for t in words.topics()}
        topic = pool[store.next_from_pool(ctx.session, update.chat_id, "topic", list(pool), now)]
    invite, invited = _invite(ctx, update.chat_id)
    text = words.text("icebreaker", topic=topic, invite=invite)
    key = f"icebreaker:{update.door.namespace}:{update.message_id}"
    await _post_or_queue(update, ctx, text, key, invited)


@commands.command(
    "公告",
    "announce",
    role=Role.LEADER,
    usage="公告 <文本>",
    summary="以机器人的名义在群里发一条公告",
    group_only=True,
)
async def announce(update: Update, ctx: Context, call: Call) -> None:
    """公告: the leader's text posted by the bot."""
    if not call.args:
        raise UsageError("请写上公告内容")
    text = words.text("announcement", text=call.args)
    key = f"announce:{update.door.namespace}:{update.message_id}"
    await _post_or_queue(update, ctx, text, key)
