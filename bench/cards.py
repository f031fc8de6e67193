"""How long one learning-evidence card takes to draw, and how big it is (prints figures).

Run: .venv/bin/python bench/cards.py
"""

from __future__ import annotations

import time
from datetime import date

from bot.cards import CardData, find_font, render_card
from scripts_library import mentor


def main() -> None:
    font = find_font()
    values = {"name": "一二三四五六七八九十一二三四五六七八九十", "course": "Python 21天入门训练营",
              "day": 8, "streak": 7, "total": 7, "reviews": 3, "points": 48}  # fmt: skip
    data = CardData(
        name=str(values["name"]),
        course=str(values["course"]),
        day=date(2026, 11, 9),
        cohort_day=8,
        cohort_length=21,
        streak=7,
        total_checkins=7,
        reviews_given=3,
        points=48,
        mentor_message=mentor.choose(values, "bench"),
        slogan="每天进步一点点，坚持的你最闪亮",
        milestone_day=7,
        next_milestone_day=14,
    )
    render_card(data, font)  # warm the font cache
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        card = render_card(data, font)
    elapsed = (time.perf_counter() - start) / runs
    print(f"card: {elapsed * 1000:.0f} ms each over {runs} runs, {len(card.png) / 1024:.0f} KB, "
          f"{card.width}x{card.height} px, font {font.path}")  # fmt: skip


if __name__ == "__main__":
    main()
