"""Peer reviews (点评, SPEC §4.1) and their anti-cheat rules (seed 001 风控).

A review is a group message that quotes or @-mentions another learner's check-in of the same or
the previous learning day, or the command ``点评 @某人 <内容>``. It earns the reviewer points when
it has enough meaningful characters (seed 002: 80), is not about themselves, is not padding, is
not a near-duplicate of their recent reviews (jieba tokens, Jaccard similarity), is the first
rewarded review of that peer today, and is within the daily cap. The reviewed learner's
``reviews_received`` rises either way; a rejected review is answered with one short line saying
why (an implicit one rejected as too short only the first time that day). An implicit (quote/@)
message shorter than ``reviews.consider_from_chars`` is just chat.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, timedelta

import jieba
from sqlalchemy import select
from sqlmodel import col

from bot import metrics
from bot.config import CohortSettings
from bot.context import Context
from bot.dispatcher import Router, in_cohort_group
from bot.updates import Event, Update
from handlers import mentions
from handlers import points as points_handlers
from handlers.commands import Call, CommandSet, Role, UsageError, reply, role_of
from handlers.text import meaningful_chars
from scripts_library.toml_scripts import render
from storage import checkins, messages, roster
from storage import points as ledger
from storage import reviews as store
from storage.checkins import CheckIn

jieba.setLogLevel(logging.WARNING)

REVIEWS_JUDGED = metrics.counter(
    "cohortbot_reviews_total", "Peer reviews judged, by verdict", ("verdict",)
)

router = Router("reviews")
commands = CommandSet("reviews")

_NOISE = re.compile(r"https?://\S+|www\.\S+|@\S+|\[[^\[\]\s]{1,6}\]")


def tokens_of(text: str) -> list[str]:
    """Word tokens (jieba), without punctuation, whitespace, emoji, links and @-mentions."""
    cleaned = _NOISE.sub(" ", text)
    return [t for t in jieba.lcut(cleaned) if any(ch.isalnum() for ch in t)]


def is_padding(text: str, tokens: list[str], min_distinct_ratio: float) -> bool:
    """Filler that makes the count without content: few distinct words or characters, or one
    phrase repeated ("好好学习好好学习好好学习...")."""
    if not tokens:
        return True
    if len(set(tokens)) / len(tokens) < min_distinct_ratio:
        return True
    chars = [ch for ch in _NOISE.sub(" ", text) if ch.isalnum()]
    if chars and len(set(chars)) / len(chars) < min_distinct_ratio / 1.5:
        return True
    joined = "".join(chars)
    return bool(re.fullmatch(r"(.{1,24}?)\1{2,}.{0,24}", joined))


def similarity(a: set[str], b: set[str]) -> float:
    """Jaccard similarity of two token sets."""
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


@dataclass(frozen=True)
class Verdict:
    """What a review earned, or why it earned nothing."""

    rewarded: bool
    because: str  # "" when rewarded, else the script name of the reason
    points: int = 0


def judge(
    ctx: Context,
    *,
    cohort: CohortSettings,
    chat_id: str,
    reviewer: str,
    reviewee: str,
    day: date,
    content: str,
    message_key: str,
) -> tuple[Verdict, bool] | None:
    """Apply every rule, record the review, pay it, count it. Returns ``(verdict, new)``; None
    for a self-review (recorded nowhere: there is no peer to count)."""
    session = ctx.session
    rules = ctx.settings.reviews
    ledger.lock_member(session, cohort.id, reviewer)  # serialises the per-day checks below
    if store.by_message(session, message_key) is not None:
        return None
    if reviewer == reviewee:
        return Verdict(False, "self"), True
    chars = meaningful_chars(content)
    tokens = tokens_of(content)
    because = ""
    group = ctx.settings.group(chat_id)
    if group is not None and reviewer in group.teachers:
        because = "staff"  # a teacher's comment counts for the learner, earns nobody points
    elif group is not None and reviewee in group.teachers:
        because = "not_learner"
    elif chars < rules.min_chars:
        because = "too_short"
    elif is_padding(content, tokens, rules.min_distinct_ratio):
        because = "padding"
    else:
        since = ctx.clock.now() - timedelta(days=rules.recent_days)
        mine = set(tokens)
        for earlier in store.recent_of(session, cohort.id, reviewer, since, rules.recent_count):
            if similarity(mine, set(earlier.tokens.split())) >= rules.similarity_threshold:
                because = "duplicate"
                break
    if not because:
        today = store.rewarded_on(session, cohort.id, reviewer, day)
        if any(r.reviewee_id == reviewee for r in today):
            because = "same_peer"
        elif len(today) >= rules.daily_cap:
            because = "cap"
    paid = 0
    if not because:
        posted = points_handlers.award(
            ctx,
            cohort=cohort,
            member_id=reviewer,
            reason=ledger.REVIEW,
            key=f"review:{message_key}",
            day=day,
            note=roster.names(session, [reviewee])[reviewee],
        )
        if posted.ok:
            paid = posted.delta
        else:
            because = "cap"
    store.add(
        session,
        store.Review(
            cohort_id=cohort.id,
            chat_id=chat_id,
            reviewer_id=reviewer,
            reviewee_id=reviewee,
            day=day,
            message_key=message_key,
            chars=chars,
            tokens=" ".join(sorted(set(tokens)))[:4000],
            rewarded=not because,
            rejected_because=because,
            created_at=ctx.clock.now(),
        ),
    )
    buffer = ctx.uow.activity
    buffer.count((chat_id, reviewee, day), reviews_received=1)
    if not because:
        buffer.count((chat_id, reviewer, day), reviews_given=1)
    REVIEWS_JUDGED.inc(verdict=because or "rewarded")
    return Verdict(not because, because, paid), True


def verdict_text(ctx: Context, verdict: Verdict, reviewee: str, content: str) -> str:
    """The one-line answer to a judged review (scripts_library/reviews.toml)."""
    rules = ctx.settings.reviews
    name = roster.names(ctx.session, [reviewee])[reviewee]
    return render(
        "reviews",
        "rewarded" if verdict.rewarded else verdict.because,
        points=verdict.points,
        chars=meaningful_chars(content),
        min_chars=rules.min_chars,
        name=name,
        cap=rules.daily_cap,
    )


async def _judge_and_answer(
    update: Update,
    ctx: Context,
    cohort: CohortSettings,
    reviewee: str,
    content: str,
    implicit: bool = False,
) -> None:
    """Judge a review and answer it, except a teacher's comment, and an implicit review that is
    too short when the reviewer was already told so today: a friendly quote-reply is chat, and a
    busy group should not hear the rule again and again."""
    day = ctx.facts.day
    assert day is not None
    result = judge(
        ctx,
        cohort=cohort,
        chat_id=update.chat_id,
        reviewer=update.sender_id,
        reviewee=reviewee,
        day=day,
        content=content,
        message_key=f"{update.door.namespace}:{update.message_id}",
    )
    if result is None:
        return
    verdict, _new = result
    if verdict.because == "staff":
        return
    if (
        implicit
        and verdict.because == "too_short"
        and store.rejected_on(ctx.session, cohort.id, update.sender_id, day, "too_short") > 1
    ):
        return
    await reply(
        update, ctx, verdict_text(ctx, verdict, reviewee, content), mentions=[update.sender_id]
    )


@router.event(Event.RECALL, filters=(lambda u, c: c.facts.recalled is not None,))
async def undo_recalled_review(update: Update, ctx: Context) -> None:
    """A recalled review stops counting: its points come back with a compensating entry (never
    below zero) and the counters go down, so "post, collect, recall" earns nothing."""
    recalled = ctx.facts.recalled
    assert recalled is not None
    session = ctx.session
    review = store.by_message(session, f"{recalled.namespace}:{recalled.msg_id}")
    if review is None or review.id is None or review.rejected_because == "recalled":
        return
    buffer = ctx.uow.activity
    buffer.count((review.chat_id, review.reviewee_id, review.day), reviews_received=-1)
    if review.rewarded:
        buffer.count((review.chat_id, review.reviewer_id, review.day), reviews_given=-1)
        paid = ledger.day_total(
            session, review.cohort_id, review.reviewer_id, [ledger.REVIEW], review.day
        )
        take = min(
            ctx.settings.points.review,
            paid,
            ledger.balance(session, review.cohort_id, review.reviewer_id),
        )
        if take > 0:
            ledger.post(
                session,
                cohort_id=review.cohort_id,
                member_id=review.reviewer_id,
                delta=-take,
                reason=ledger.REVIEW,
                key=f"review_undo:{review.message_key}",
                day=review.day,
                now=ctx.clock.now(),
                note="撤回了点评",
            )
    store.mark_recalled(session, review.id)


def _checked_in_recently(ctx: Context, cohort_id: str, member: str, day: date) -> bool:
    found = ctx.session.scalar(
        select(col(CheckIn.id)).where(
            col(CheckIn.cohort_id) == cohort_id,
            col(CheckIn.member_id) == member,
            col(CheckIn.day).in_([day, day - timedelta(days=1)]),
        )
    )
    return found is not None


def _mentioned_ids(ctx: Context, update: Update) -> list[str]:
    ids = [m for m in update.mentions if m]
    if "@" in update.text or "＠" in update.text:
        members = roster.names_in_group(ctx.session, update.chat_id)
        ids += [m for m in mentions.resolve(update.text, members).ids if m not in ids]
    return ids


def _target(ctx: Context, update: Update, cohort: CohortSettings, day: date) -> str | None:
    """The learner whose recent check-in this message quotes or @-mentions, if any. Quoting
    one's own check-in (to add to it) is chat, not a self-review."""
    if update.quoted_message_id:
        ns = update.door.namespace
        quoted = checkins.by_message(ctx.session, f"{ns}:{update.quoted_message_id}")
        if quoted is not None and quoted.day in (day, day - timedelta(days=1)):
            return quoted.member_id if quoted.member_id != update.sender_id else None
        author = update.quoted_author_id
        if author is None:
            stored = messages.get(ctx.session, ns, update.quoted_message_id)
            author = stored.sender_id if stored is not None else None
        if (
            author
            and author != update.sender_id
            and _checked_in_recently(ctx, cohort.id, author, day)
        ):
            return author
    if "@" in update.text or update.mentions:
        for member in _mentioned_ids(ctx, update):
            if member != update.sender_id and _checked_in_recently(ctx, cohort.id, member, day):
                return member
    return None


def _addressed_to_bot(update: Update) -> bool:
    text = update.text.lstrip()
    return update.mentioned_bot or text.startswith(("/", "／"))


@router.message(in_cohort_group, lambda u, c: not _addressed_to_bot(u))
async def detect_review(update: Update, ctx: Context) -> None:
    """An implicit review: a quote or an @-mention of a peer's recent check-in."""
    cohort, day = ctx.cohort, ctx.facts.day
    assert cohort is not None and day is not None
    if ctx.facts.chars < ctx.settings.reviews.consider_from_chars and not update.text.startswith(
        "点评"
    ):
        return
    if ctx.facts.checkin_id is not None:
        return  # a check-in that @-mentions someone is the sender's own check-in
    target = _target(ctx, update, cohort, day)
    if target is None and update.text.startswith("点评"):
        mentioned = _mentioned_ids(ctx, update)
        target = mentioned[0] if mentioned else None
    if target is None:
        return
    await _judge_and_answer(
        update, ctx, cohort, target, update.text, implicit=not update.text.startswith("点评")
    )


@commands.command(
    "点评", "review", usage="点评 @某人 <点评内容>", summary="点评同学的作业/打卡", group_only=True
)
async def review_command(update: Update, ctx: Context, call: Call) -> None:
    """点评 @人 <内容>: the explicit review, no check-in of the peer needed."""
    cohort = ctx.cohort
    if cohort is None or ctx.facts.day is None:
        await reply(update, ctx, "请在训练营群里点评哦。")
        return
    if not call.mentions:
        raise UsageError("请 @ 一位同学")
    content = " ".join(call.words)
    reviewee = call.mentions[0]
    if role_of(ctx.settings, update.chat_id, reviewee) is Role.TEACHER:
        await reply(update, ctx, render("reviews", "not_learner"), mentions=[update.sender_id])
        return
    await _judge_and_answer(update, ctx, cohort, reviewee, content)
