"""A member's current card: gathering the numbers from storage into :class:`CardData`.

``member_card`` is what ``cohortbot card`` calls; :func:`card_for` is the pipeline's card maker
(the ``我的`` command and the milestone congratulation send its card), and :func:`card_png` draws
such a card when the outbox delivers it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date

from sqlalchemy.orm import Session

from bot.cards.fonts import CardFont, FontNotFoundError, find_font
from bot.cards.render import CardData, RenderedCard, render_card
from bot.clock import learning_day
from bot.config import CohortSettings, Settings
from bot.context import Context
from scripts_library import mentor
from storage import activity, checkins, cohort_dates, milestones, points, roster

log = logging.getLogger(__name__)


def points_for(session: Session, cohort_id: str, member_id: str) -> int:
    """The member's points balance in the cohort (the ledger's sum)."""
    return points.balance(session, cohort_id, member_id)


def milestones_for(
    session: Session, cohort: CohortSettings, member_id: str
) -> tuple[int | None, int | None]:
    """(highest milestone awarded, the next milestone day after it)."""
    awarded = [b.milestone for b in milestones.of_member(session, cohort.id, member_id)]
    reached = max(awarded, default=None)
    ahead = [m for m in cohort.milestone_days if reached is None or m > reached]
    return reached, (ahead[0] if ahead else None)


def slogan_of(settings: Settings, cohort: CohortSettings) -> str:
    return cohort.slogan or settings.cards.default_slogan


def card_data(
    session: Session, settings: Settings, cohort: CohortSettings, member_id: str, today: date
) -> CardData:
    """The numbers on ``member_id``'s card as of the learning day ``today``."""
    name = roster.names(session, [member_id])[member_id]
    days = [c.day for c in checkins.of_member(session, cohort.id, member_id)]
    streak = checkins.cohort_streak(days, today, cohort)
    reviews = activity.member_sum(
        session, [g.chat_id for g in cohort.groups], member_id, "reviews_given"
    )
    points = points_for(session, cohort.id, member_id)
    reached, upcoming = milestones_for(session, cohort, member_id)
    cohort_day = cohort.cohort_day(today)
    message = mentor.choose(
        {
            "name": name,
            "course": cohort.course,
            # Before the first day (day < 1) and after the last (days_left 0) the message is one
            # of the "before"/"after" ones (mentor.stage_of), which name neither number.
            "day": cohort_day,
            "days_left": cohort.days_left(today),  # as the nudges' {days_left}: 1 on the last day
            "streak": streak.current,
            "total": streak.total,
            "reviews": reviews,
            "points": points,
        },
        seed=f"{cohort.id}:{member_id}:{today.isoformat()}",
    )
    return CardData(
        name=name,
        course=cohort.course,
        day=today,
        cohort_day=cohort_day,
        cohort_length=cohort.length_days,
        streak=streak.current,
        total_checkins=streak.total,
        reviews_given=reviews,
        points=points,
        mentor_message=message,
        slogan=slogan_of(settings, cohort),
        milestone_day=reached,
        next_milestone_day=upcoming,
        milestone_basis=settings.streaks.milestone_basis,
    )


def card_font(settings: Settings) -> CardFont:
    """The configured or system CJK font (raises :class:`FontNotFoundError` without one)."""
    return find_font(settings.cards.font_path)


def render_member_card(
    session: Session, settings: Settings, cohort: CohortSettings, member_id: str, today: date
) -> RenderedCard:
    """Render ``member_id``'s current card."""
    data = card_data(session, settings, cohort, member_id, today)
    return render_card(data, card_font(settings))


def member_card(
    session: Session, settings: Settings, cohort: CohortSettings, member_id: str, today: date
) -> bytes:
    """The member's current card as PNG bytes (for ``Outbound(kind=Kind.IMAGE, image=...)``)."""
    return render_member_card(session, settings, cohort, member_id, today).png


#: The font problems :func:`card_for` has warned about in this process.
_FONT_PROBLEMS_TOLD: set[str] = set()


def card_for(ctx: Context, kind: str, fields: Mapping[str, object]) -> dict[str, object] | None:
    """The pipeline's :data:`bot.context.CardMaker`: the member's current card as JSON (drawn when
    it is delivered, see :func:`card_png`), or None (text only) when no CJK font is installed.
    ``kind`` ("progress", "milestone") does not change the card: a milestone card is the current
    card, which shows the new badge."""
    configured = ctx.cohort or ctx.settings.cohort(str(fields["cohort_id"]))
    # A private chat has no ctx.cohort: apply 开营/结营 here too (a no-op on ctx.cohort, which the
    # pipeline already moved), so the card counts the days the text beside it counts.
    cohort = cohort_dates.effective(ctx.session, configured)
    today = ctx.facts.day or learning_day(ctx.clock.now(), cohort.timezone, cohort.day_start_hour)
    try:
        card_font(ctx.settings)  # no card is queued that could not be drawn
    except FontNotFoundError as exc:
        # Once per process and reason as a warning: without a font every card fails alike.
        first = str(exc) not in _FONT_PROBLEMS_TOLD
        _FONT_PROBLEMS_TOLD.add(str(exc))
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "card for %s not drawn (%s): %s",
            fields.get("member_id"),
            kind,
            exc,
        )
        return None
    member_id = str(fields["member_id"])
    return card_data(ctx.session, ctx.settings, cohort, member_id, today).to_json()


def card_png(card: Mapping[str, object], settings: Settings) -> bytes:
    """Draw a card that :func:`card_for` made (about 0.1 s: call it off the event loop).

    Raises ``ValueError`` for a card that is not one, :class:`FontNotFoundError` without a font.
    """
    return render_card(CardData.from_json(card), card_font(settings)).png
