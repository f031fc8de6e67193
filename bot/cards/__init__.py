"""Learning-evidence cards (学习证据卡, SPEC §9): font discovery, drawing, and a member's data."""

from bot.cards.fonts import CardFont, FontNotFoundError, find_font
from bot.cards.member import card_data, member_card, points_for
from bot.cards.render import CardData, RenderedCard, render_card

__all__ = [
    "CardData",
    "CardFont",
    "FontNotFoundError",
    "RenderedCard",
    "card_data",
    "find_font",
    "member_card",
    "points_for",
    "render_card",
]
