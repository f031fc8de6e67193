"""Finding a CJK font for cards, and knowing which characters it can draw (SPEC §9).

Order: the configured ``[cards] font_path``; then well-known system fonts (Debian's
``fonts-wqy-microhei``, ``fonts-noto-cjk``, ``fonts-wqy-zenhei``). No font is packaged: when none
is found, :class:`FontNotFoundError` says how to get one. A card is never drawn with a font that
lacks Chinese glyphs, and characters the font lacks are left out rather than drawn as tofu boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from fontTools.ttLib import TTCollection, TTFont
from PIL import ImageFont

#: Known locations on Debian/Ubuntu, best first.
SYSTEM_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)

#: A font must draw all of these to count as a CJK font.
PROBE = "学习证据卡连续打卡天积分点评导师寄语"

HOW_TO_GET_ONE = (
    "install one (Debian: apt-get install -y fonts-wqy-microhei, or fonts-noto-cjk) "
    "or set [cards] font_path to a TrueType/OpenType font with Chinese glyphs"
)


class FontNotFoundError(RuntimeError):
    """No usable CJK font: cards cannot be drawn without tofu boxes."""


@dataclass(frozen=True)
class CardFont:
    """A CJK font file and the set of code points it has glyphs for."""

    path: Path
    index: int = 0  # face number inside a .ttc collection
    codepoints: frozenset[int] = field(default=frozenset(), repr=False)

    def covers(self, ch: str) -> bool:
        """True when the font has a glyph for ``ch`` (whitespace always passes)."""
        return ch.isspace() or ord(ch) in self.codepoints

    def missing(self, text: str) -> set[str]:
        """The characters of ``text`` this font would draw as tofu."""
        return {ch for ch in text if not self.covers(ch)}

    def drawable(self, text: str) -> str:
        """``text`` without the characters the font lacks (emoji in a name, a rare character)."""
        return "".join(ch for ch in text if self.covers(ch))

    def at(self, size: int) -> ImageFont.FreeTypeFont:
        """The font at ``size`` pixels, for Pillow."""
        return _pillow_font(str(self.path), self.index, size)


@cache
def _pillow_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size=size, index=index)


def _cmap(path: Path, index: int) -> frozenset[int]:
    if path.suffix.lower() in {".ttc", ".otc"}:
        with TTCollection(str(path), lazy=True) as collection:
            return frozenset(collection.fonts[index].getBestCmap() or {})
    with TTFont(str(path), lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


@cache
def load(path: str, index: int = 0) -> CardFont:
    """Load the font at ``path`` and its character map; refuse one without Chinese glyphs."""
    p = Path(path)
    if not p.is_file():
        raise FontNotFoundError(f"card font {path!r} does not exist; {HOW_TO_GET_ONE}")
    try:
        codepoints = _cmap(p, index)
    except Exception as exc:  # fontTools raises many kinds on a broken file
        raise FontNotFoundError(
            f"card font {path!r} cannot be read ({exc}); {HOW_TO_GET_ONE}"
        ) from None
    font = CardFont(path=p, index=index, codepoints=codepoints)
    lacking = font.missing(PROBE)
    if lacking:
        raise FontNotFoundError(
            f"card font {path!r} has no Chinese glyphs (lacks {''.join(sorted(lacking))}); "
            f"{HOW_TO_GET_ONE}"
        )
    return font


def find_font(configured: str = "") -> CardFont:
    """The configured font, else the first usable system font.

    Raises :class:`FontNotFoundError` when there is none.
    """
    if configured:
        return load(configured)
    for candidate in SYSTEM_FONTS:
        if Path(candidate).is_file():
            try:
                return load(candidate)
            except FontNotFoundError:
                continue
    raise FontNotFoundError(f"no CJK font found for cards; {HOW_TO_GET_ONE}")
