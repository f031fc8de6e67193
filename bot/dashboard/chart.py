"""A server-rendered SVG chart of a group's activity per day: no JavaScript, nothing from the web.

Bars are check-ins, the line is members who sent at least one message that day.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from bot.dashboard.data import DayPoint

WIDTH = 960
HEIGHT = 320
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 40, 40
BAR = "#e27a3f"
LINE = "#1f5f6b"
GRID = "#e6e0d6"
TEXT = "#5a5f66"


def _nice_max(value: int) -> int:
    """A round upper bound for the y axis: a multiple of 4 (four whole-number gridlines)."""
    top = max(value, 4)
    if top <= 40:
        return -(-top // 4) * 4
    step = 4 * 10 ** (len(str(top)) - 2)  # two significant digits
    return -(-top // step) * step


def activity_svg(points: Sequence[DayPoint], title: str = "每日活跃人数与打卡数") -> Markup:
    """The chart as an inline ``<svg>`` element (safe to put into a page)."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    n = max(len(points), 1)
    top = _nice_max(max([p.active_members for p in points] + [p.checkins for p in points] + [0]))
    slot = plot_w / n

    def y(value: int) -> float:
        return TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg id="activity-chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" aria-label="{escape(title)}" '
        f'font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):
        value = top * i // 4
        gy = y(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="{GRID}"/>'
            f'<text x="{LEFT - 8}" y="{gy + 4:.1f}" text-anchor="end" fill="{TEXT}">{value}</text>'
        )
    label_every = max(1, n // 10)
    line_points = []
    for i, p in enumerate(points):
        x0 = LEFT + i * slot
        cx = x0 + slot / 2
        bar_w = slot * 0.55
        by = y(p.checkins)
        parts.append(
            f'<rect class="bar" x="{cx - bar_w / 2:.1f}" y="{by:.1f}" width="{bar_w:.1f}" '
            f'height="{TOP + plot_h - by:.1f}" fill="{BAR}" rx="2">'
            f"<title>{p.day.isoformat()} 打卡 {p.checkins} 人次</title></rect>"
        )
        line_points.append((cx, y(p.active_members), p))
        if i % label_every == 0 or i == n - 1:
            parts.append(
                f'<text x="{cx:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle" '
                f'fill="{TEXT}">{p.day.month:02d}-{p.day.day:02d}</text>'
            )
    if line_points:
        path = " ".join(f"{x:.1f},{yy:.1f}" for x, yy, _ in line_points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{LINE}" stroke-width="2.5"/>')
        for x, yy, p in line_points:
            parts.append(
                f'<circle class="dot" cx="{x:.1f}" cy="{yy:.1f}" r="4" fill="{LINE}">'
                f"<title>{p.day.isoformat()} 活跃 {p.active_members} 人</title></circle>"
            )
    parts.append(
        f'<rect x="{LEFT}" y="10" width="14" height="14" fill="{BAR}" rx="2"/>'
        f'<text x="{LEFT + 20}" y="22" fill="{TEXT}">打卡人次</text>'
        f'<line x1="{LEFT + 110}" x2="{LEFT + 134}" y1="17" y2="17" stroke="{LINE}" '
        f'stroke-width="2.5"/><circle cx="{LEFT + 122}" cy="17" r="4" fill="{LINE}"/>'
        f'<text x="{LEFT + 142}" y="22" fill="{TEXT}">活跃人数（当天发过言）</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
