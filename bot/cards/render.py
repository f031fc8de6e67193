"""Drawing a learning-evidence card (学习证据卡, SPEC §9, seed 001) as a PNG with Pillow.

Input is a frozen :class:`CardData`, so whoever knows the numbers (points, milestones) fills it
and this module only draws. Every piece of text is measured: a long name shrinks, then wraps; the
mentor message wraps by pixel width; nothing is drawn past the margins. :func:`render_card`
returns the PNG together with the boxes of every text it drew, which the tests check.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import date

from PIL import Image, ImageDraw

from bot.cards.fonts import CardFont

WIDTH = 1080
MARGIN = 60
CONTENT = WIDTH - 2 * MARGIN
MIN_HEIGHT = 1440
MAX_BYTES = 2 * 1024 * 1024  # WeCom image messages: at most 2 MB

BACKGROUND = (251, 247, 240)
HEADER = (31, 95, 107)
ACCENT = (226, 122, 63)
GOLD = (232, 180, 60)
INK = (40, 44, 52)
MUTED = (120, 124, 132)
TILE = (255, 255, 255)
TILE_LINE = (230, 224, 214)
WHITE = (255, 255, 255)

#: Characters that must not start a line (Chinese line-breaking rule 避头点).
NO_LINE_START = set("，。！？、；：）」』》〉】”’…,.!?;:)")


@dataclass(frozen=True)
class CardData:
    """Everything a card shows. Built by :func:`bot.cards.member.card_data`."""

    name: str
    course: str
    day: date  # the learning day the card is for
    cohort_day: int  # 1-based; may be 0 before the start or > length after the end
    cohort_length: int
    streak: int
    total_checkins: int
    reviews_given: int
    points: int
    mentor_message: str
    slogan: str
    milestone_day: int | None = None  # the highest milestone reached, if any
    next_milestone_day: int | None = None
    #: What a milestone counts (``[streaks] milestone_basis``): "streak" (consecutive days) or
    #: "total" (check-in days in all); the hint under the badge counts the same.
    milestone_basis: str = "streak"

    def to_json(self) -> dict[str, object]:
        """The fields as JSON values (the day as ``YYYY-MM-DD``): what an outbox row keeps of a
        card that is drawn when it is sent."""
        out = asdict(self)
        out["day"] = self.day.isoformat()
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> CardData:
        """The card :meth:`to_json` gave; ``ValueError`` naming the field that is missing or of
        the wrong type."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(value) - known)
        if extra:
            raise ValueError(f"card: unknown field {extra[0]!r}")
        args: dict[str, object] = {}
        for f in fields(cls):
            if f.name not in value:
                if f.default is MISSING:
                    raise ValueError(f"card: missing field {f.name!r}")
                args[f.name] = f.default  # a card queued before the field existed
                continue
            args[f.name] = _json_field(f.name, str(f.type), value[f.name])
        return cls(**args)  # type: ignore[arg-type]


def _milestone_hint(data: CardData) -> str:
    """The line under the badge: how far the next milestone is, counted as milestones count (a
    streak, or days in all); before the start counted from the first day, after the end none
    (no check-in counts any more: the record stands)."""
    upcoming = data.next_milestone_day
    if not upcoming:
        return "所有里程碑都已达成，了不起！"
    if data.cohort_length > 0 and data.cohort_day > data.cohort_length:
        return "训练营已结营，打卡记录到此为止"
    if data.cohort_day < 1:
        basis = "打卡" if data.milestone_basis == "total" else "连续打卡"
        return f"开营后{basis} {upcoming} 天，解锁「{upcoming}天里程碑」"
    if data.milestone_basis == "total":
        return f"再打卡 {max(upcoming - data.total_checkins, 0)} 天，解锁「{upcoming}天里程碑」"
    return f"再连续打卡 {max(upcoming - data.streak, 0)} 天，解锁「{upcoming}天里程碑」"


def _json_field(name: str, annotation: str, raw: object) -> object:
    """One :class:`CardData` field from JSON, checked against its annotation."""
    if annotation == "date":
        if isinstance(raw, str):
            try:
                return date.fromisoformat(raw)
            except ValueError:
                pass
        raise ValueError(f"card: field {name!r} is not a YYYY-MM-DD date")
    if annotation == "str":
        if isinstance(raw, str):
            return raw
        raise ValueError(f"card: field {name!r} is not text")
    if raw is None and annotation.endswith("| None"):
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise ValueError(f"card: field {name!r} is not a whole number")


@dataclass(frozen=True)
class TextBox:
    """One piece of text drawn on the card and where (left, top, right, bottom)."""

    text: str  # what was drawn
    box: tuple[int, int, int, int]
    source: str = ""  # what was asked for (differs when the font lacked a character)


@dataclass(frozen=True)
class RenderedCard:
    png: bytes
    width: int
    height: int
    texts: tuple[TextBox, ...] = field(repr=False)


class _Canvas:
    def __init__(self, font: CardFont, height: int) -> None:
        self.font = font
        self.image = Image.new("RGB", (WIDTH, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.texts: list[TextBox] = []

    def text(
        self,
        xy: tuple[float, float],
        text: str,
        size: int,
        fill: tuple[int, int, int],
        anchor: str = "la",
        bold: bool = False,
    ) -> tuple[int, int, int, int]:
        source, text = text, self.font.drawable(text)
        face = self.font.at(size)
        stroke = 1 if bold else 0
        box = self.draw.textbbox(xy, text, font=face, anchor=anchor, stroke_width=stroke)
        self.draw.text(
            xy, text, font=face, fill=fill, anchor=anchor, stroke_width=stroke, stroke_fill=fill
        )
        ibox = (int(box[0]), int(box[1]), int(box[2]) + 1, int(box[3]) + 1)
        self.texts.append(TextBox(text, ibox, source))
        return ibox

    def width_of(self, text: str, size: int, bold: bool = False) -> float:
        face = self.font.at(size)
        box = self.draw.textbbox(
            (0, 0), self.font.drawable(text), font=face, stroke_width=1 if bold else 0
        )
        return box[2] - box[0]


def wrap(canvas: _Canvas, text: str, size: int, max_width: float) -> list[str]:
    """Break ``text`` into lines no wider than ``max_width`` (character by character, CJK style)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for ch in paragraph:
            if canvas.width_of(line + ch, size) <= max_width or not line:
                line += ch
                continue
            if ch in NO_LINE_START and len(line) > 1:
                lines.append(line[:-1])
                line = line[-1] + ch
            else:
                lines.append(line)
                line = ch
        lines.append(line)
    return lines


def _fit(
    canvas: _Canvas, text: str, start: int, smallest: int, max_width: float, bold: bool
) -> int:
    size = start
    while size > smallest and canvas.width_of(text, size, bold) > max_width:
        size -= 2
    return size


#: One card drawn at a time: a FreeType face (cached per font and size) is not safe to use from
#: two threads at once, and cards are drawn off the event loop (see :mod:`bot.wecom.delivery`).
_DRAWING = threading.Lock()


def render_card(data: CardData, font: CardFont) -> RenderedCard:
    """Draw ``data`` as a 1080-pixel-wide PNG (under 2 MB); safe to call from any thread."""
    with _DRAWING:
        return _draw(data, font)


def _draw(data: CardData, font: CardFont) -> RenderedCard:
    canvas = _Canvas(font, 2600)
    c = canvas

    # Header band: title, course, cohort day.
    c.draw.rectangle((0, 0, WIDTH, 300), fill=HEADER)
    c.draw.rectangle((0, 300, WIDTH, 312), fill=ACCENT)
    c.text((MARGIN, 60), "学习证据卡", 64, WHITE, bold=True)
    if data.cohort_length > 0 and 1 <= data.cohort_day <= data.cohort_length:
        day_text = f"第 {data.cohort_day} / {data.cohort_length} 天"
    elif data.cohort_day < 1:
        day_text = "即将开营"
    else:
        day_text = "已结营"
    c.text((WIDTH - MARGIN, 78), day_text, 40, WHITE, anchor="ra")
    course_size = _fit(c, data.course, 40, 24, CONTENT, False)
    y = 170
    for line in wrap(c, data.course, course_size, CONTENT)[:2]:
        c.text((MARGIN, y), line, course_size, WHITE)
        y += int(course_size * 1.35)

    # Learner name: shrink to fit, then wrap.
    y = 360
    name_size = _fit(c, data.name, 76, 48, CONTENT, True)
    for line in wrap(c, data.name, name_size, CONTENT):
        c.text((MARGIN, y), line, name_size, INK, bold=True)
        y += int(name_size * 1.3)
    c.text((MARGIN, y + 6), f"{data.day.isoformat()} 的学习记录", 30, MUTED)
    y += 80

    # Stats: a 2x2 grid of tiles.
    tiles = (
        ("连续打卡", f"{data.streak}", "天"),
        ("累计打卡", f"{data.total_checkins}", "天"),
        ("点评同学", f"{data.reviews_given}", "次"),
        ("当前积分", f"{data.points}", "分"),
    )
    gap = 30
    tile_w = (CONTENT - gap) // 2
    tile_h = 190
    for i, (label, number, unit) in enumerate(tiles):
        left = MARGIN + (i % 2) * (tile_w + gap)
        top = y + (i // 2) * (tile_h + gap)
        c.draw.rounded_rectangle(
            (left, top, left + tile_w, top + tile_h),
            radius=24,
            fill=TILE,
            outline=TILE_LINE,
            width=3,
        )
        c.text((left + 36, top + 30), label, 32, MUTED)
        number_size = _fit(c, number, 80, 40, tile_w - 140, True)
        box = c.text((left + 36, top + 160), number, number_size, ACCENT, anchor="ls", bold=True)
        c.text((box[2] + 12, top + 158), unit, 32, INK, anchor="ls")
    y += 2 * tile_h + gap + 50

    # Milestone badge.
    radius = 80
    cx, cy = MARGIN + radius, y + radius
    if data.milestone_day:
        c.draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=GOLD)
        c.draw.ellipse(
            (cx - radius + 10, cy - radius + 10, cx + radius - 10, cy + radius - 10),
            outline=WHITE,
            width=4,
        )
        c.text(
            (cx, cy),
            f"{data.milestone_day}天",
            _fit(c, f"{data.milestone_day}天", 48, 28, 2 * radius - 40, True),
            WHITE,
            anchor="mm",
            bold=True,
        )
        headline = f"已点亮「{data.milestone_day}天里程碑」徽章"
    else:
        c.draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=GOLD, width=6)
        c.text((cx, cy), "徽章", 40, GOLD, anchor="mm", bold=True)
        headline = "第一枚里程碑徽章等你点亮"
    text_left = MARGIN + 2 * radius + 40
    text_width = WIDTH - MARGIN - text_left
    c.text(
        (text_left, cy - 50), headline, _fit(c, headline, 40, 28, text_width, True), INK, bold=True
    )
    hint = _milestone_hint(data)
    c.text((text_left, cy + 20), hint, _fit(c, hint, 32, 22, text_width, False), MUTED)
    y += 2 * radius + 60

    # Mentor message.
    size = 36
    lines = wrap(c, data.mentor_message, size, CONTENT - 80)
    line_h = int(size * 1.65)
    box_h = 110 + len(lines) * line_h + 30
    c.draw.rounded_rectangle(
        (MARGIN, y, WIDTH - MARGIN, y + box_h), radius=24, fill=TILE, outline=TILE_LINE, width=3
    )
    c.draw.rectangle((MARGIN, y + 30, MARGIN + 10, y + 80), fill=ACCENT)
    c.text((MARGIN + 40, y + 34), "导师寄语", 36, HEADER, bold=True)
    ty = y + 110
    for line in lines:
        c.text((MARGIN + 40, ty), line, size, INK)
        ty += line_h
    y += box_h + 60

    # Slogan and footer.
    slogan_size = _fit(c, data.slogan, 44, 26, CONTENT, True)
    for line in wrap(c, data.slogan, slogan_size, CONTENT):
        c.text((WIDTH // 2, y), line, slogan_size, HEADER, anchor="ma", bold=True)
        y += int(slogan_size * 1.4)
    y += 30
    c.draw.line((MARGIN, y, WIDTH - MARGIN, y), fill=TILE_LINE, width=2)
    c.text((WIDTH // 2, y + 30), "坚持打卡 · 记录每一次成长", 28, MUTED, anchor="ma")
    height = max(MIN_HEIGHT, y + 110)

    image = c.image.crop((0, 0, WIDTH, height))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    png = out.getvalue()
    if len(png) > MAX_BYTES:  # flat colours compress to ~100 KB; this is a safety net
        out = io.BytesIO()
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(out, format="PNG")
        png = out.getvalue()
    return RenderedCard(png=png, width=WIDTH, height=height, texts=tuple(c.texts))
