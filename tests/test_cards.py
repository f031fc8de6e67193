"""Learning-evidence cards: glyph coverage, size, layout limits, data from storage, the CLI."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from bot.app import App
from bot.cards import fonts
from bot.cards.member import card_data, member_card, render_member_card
from bot.cards.render import MARGIN, MAX_BYTES, WIDTH, CardData, RenderedCard, render_card
from bot.cli import main
from bot.config import DEFAULT_CARD_SLOGAN
from scripts_library import mentor
from tests.builders import archive_text, local, pair
from tests.cardfont import cjk_font_or_skip, sample_card
from tests.conftest import GROUP_A, GROUP_B

SAMPLE_NAMES = (
    "小鱼",
    "王小明",
    "欧阳娜娜",
    "Lily 李",
    "张三丰-Python学员",
    "一二三四五六七八九十一二三四五六七八九十",
    "龙猫先生·阿杰",
)
LONG_NAME = "一二三四五六七八九十一二三四五六七八九十"


@pytest.fixture
def font() -> fonts.CardFont:
    return cjk_font_or_skip()


def variants() -> list[CardData]:
    """Cards in every state the layout has (milestone or not, before/after the cohort)."""
    return [
        sample_card(),
        sample_card(milestone_day=None, next_milestone_day=7, streak=0, total_checkins=0),
        sample_card(cohort_day=0, milestone_day=21, next_milestone_day=None),
        sample_card(cohort_day=30),
    ]


def notdef_mask(face: object) -> bytes:
    # U+10FFFD is a private-use code point no CJK font maps: it draws the .notdef (tofu) glyph.
    return bytes(face.getmask("\U0010fffd"))  # type: ignore[attr-defined]


def test_font_has_a_glyph_for_every_character_cards_can_show(font: fonts.CardFont) -> None:
    texts: list[str] = [t.text for t in mentor.templates()]
    texts += [*SAMPLE_NAMES, DEFAULT_CARD_SLOGAN, "Python 21天入门训练营", "0123456789"]
    for data in variants():
        texts += [box.source for box in render_card(data, font).texts]
    chars = {ch for text in texts for ch in text if not ch.isspace()}
    assert not font.missing("".join(chars)), (
        f"font {font.path} lacks {sorted(font.missing(''.join(chars)))}"
    )
    # Cross-check the cmap with what Pillow really draws: no character renders as .notdef.
    face = font.at(40)
    tofu = notdef_mask(face)
    drawn_as_tofu = sorted(
        ch for ch in chars if face.getmask(ch).getbbox() is None or bytes(face.getmask(ch)) == tofu
    )
    assert not drawn_as_tofu


def test_characters_the_font_lacks_are_left_out_not_drawn_as_tofu(font: fonts.CardFont) -> None:
    rendered = render_card(sample_card(name="小鱼\U0010fffd"), font)
    names = [b for b in rendered.texts if b.source == "小鱼\U0010fffd"]
    assert names and names[0].text == "小鱼"
    assert not any("\U0010fffd" in b.text for b in rendered.texts)


def check_layout(card: RenderedCard) -> None:
    assert card.width == WIDTH
    with Image.open(io.BytesIO(card.png)) as image:
        assert image.format == "PNG" and image.size == (card.width, card.height)
    assert len(card.png) < MAX_BYTES
    for box in card.texts:
        left, top, right, bottom = box.box
        assert left >= MARGIN - 4 and right <= WIDTH - MARGIN + 4, box
        assert 0 <= top < bottom <= card.height, box
        assert box.text == box.source, box


def test_the_milestone_hint_counts_as_milestones_count(font: fonts.CardFont) -> None:
    # 17 days in a row, 19 in all: the 21-day milestone is 4 days of streak away when
    # milestones count streaks (the default), 2 days away when they count days in all.
    common = {"streak": 17, "total_checkins": 19, "milestone_day": 14, "next_milestone_day": 21}
    by_streak = render_card(sample_card(**common), font)
    assert "再连续打卡 4 天，解锁「21天里程碑」" in [b.source for b in by_streak.texts]
    by_total = render_card(sample_card(**common, milestone_basis="total"), font)
    assert "再打卡 2 天，解锁「21天里程碑」" in [b.source for b in by_total.texts]
    done = render_card(sample_card(milestone_day=28, next_milestone_day=None), font)
    assert "所有里程碑都已达成，了不起！" in [b.source for b in done.texts]


def test_no_milestone_hint_after_the_end_and_one_from_the_first_day_before_it(
    font: fonts.CardFont,
) -> None:
    # After the last day no check-in counts: no "再连续打卡 4 天", the record stands.
    for ended in (sample_card(cohort_day=22), sample_card(cohort_day=11, cohort_length=10)):
        drawn = [b.source for b in render_card(replace(ended, streak=10), font).texts]
        assert "已结营" in drawn and "训练营已结营，打卡记录到此为止" in drawn
        assert not any("解锁" in t for t in drawn), drawn
    done = render_card(sample_card(cohort_day=22, next_milestone_day=None), font)
    assert "所有里程碑都已达成，了不起！" in [b.source for b in done.texts]
    # Before the first day the next milestone counts from the start.
    early = sample_card(cohort_day=0, streak=0, total_checkins=0, next_milestone_day=7)
    drawn = [b.source for b in render_card(replace(early, milestone_day=None), font).texts]
    assert "即将开营" in drawn and "开营后连续打卡 7 天，解锁「7天里程碑」" in drawn
    by_total = render_card(replace(early, milestone_day=None, milestone_basis="total"), font)
    assert "开营后打卡 7 天，解锁「7天里程碑」" in [b.source for b in by_total.texts]


def test_card_is_1080_wide_png_under_2mb(font: fonts.CardFont) -> None:
    for data in variants():
        card = render_card(data, font)
        check_layout(card)
        assert 1080 <= card.height <= 2600


def test_twenty_character_name_and_zero_streak_fit(font: fonts.CardFont) -> None:
    data = sample_card(
        name=LONG_NAME,
        streak=0,
        total_checkins=0,
        milestone_day=None,
        next_milestone_day=7,
        points=0,
        reviews_given=0,
    )
    card = render_card(data, font)
    check_layout(card)
    drawn = "".join(b.text for b in card.texts if b.text and b.text in LONG_NAME)
    assert LONG_NAME in drawn  # the whole name is on the card, shrunk or wrapped
    numbers = [b.text for b in card.texts]
    assert numbers.count("0") >= 4
    # A long name and a long course still fit.
    card = render_card(
        replace(data, course="零基础Python数据分析与自动化办公实战训练营（第十二期）"), font
    )
    check_layout(card)


def test_mentor_message_is_wrapped_entirely_inside_the_card(font: fonts.CardFont) -> None:
    data = sample_card()
    card = render_card(data, font)
    start = next(i for i, b in enumerate(card.texts) if b.text == "导师寄语") + 1
    body = ""
    for box in card.texts[start:]:
        if len(body) >= len(data.mentor_message):
            break
        body += box.text
    assert body == data.mentor_message


def test_a_font_without_chinese_glyphs_is_refused_clearly(tmp_path: Path) -> None:
    latin = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not latin.is_file():
        pytest.skip("DejaVuSans not installed")
    with pytest.raises(fonts.FontNotFoundError, match=r"no Chinese glyphs.*fonts-wqy-microhei"):
        fonts.find_font(str(latin))
    with pytest.raises(fonts.FontNotFoundError, match="does not exist"):
        fonts.find_font(str(tmp_path / "none.ttf"))


def test_no_system_font_gives_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", ("/nonexistent/font.ttc",))
    with pytest.raises(fonts.FontNotFoundError, match=r"no CJK font found.*font_path"):
        fonts.find_font("")


async def seed(app: App) -> None:
    items = [
        archive_text(GROUP_A, "wmU1", f"#打卡 Day{d}", local(2026, 11, 1 + d, 9), name="小鱼")
        for d in range(1, 8)
    ]
    items.append(archive_text(GROUP_B, "wmU1", "大家好", local(2026, 11, 8, 9)))
    await app.pipeline.ingest([pair(i) for i in items])
    async with app.db.unit_of_work() as uow:
        uow.activity.count((GROUP_A, "wmU1", date(2026, 11, 5)), reviews_given=2)
        uow.activity.count((GROUP_B, "wmU1", date(2026, 11, 8)), reviews_given=1)


async def test_member_card_reads_storage(app: App, font: fonts.CardFont) -> None:
    await seed(app)
    cohort = app.settings.cohort("c1")
    with app.db.session() as session:
        data = card_data(session, app.settings, cohort, "wmU1", date(2026, 11, 8))
        png = member_card(session, app.settings, cohort, "wmU1", date(2026, 11, 8))
        rendered = render_member_card(session, app.settings, cohort, "wmU1", date(2026, 11, 8))
    assert data.name == "小鱼" and data.course == "Python 21天入门"
    assert (data.cohort_day, data.cohort_length) == (7, 21)
    # Points come from the ledger: 7 check-ins x 2 plus the 7-day milestone bonus of 10.
    assert (data.streak, data.total_checkins, data.reviews_given, data.points) == (7, 7, 3, 24)
    assert (data.milestone_day, data.next_milestone_day) == (7, 14)
    assert data.milestone_basis == app.settings.streaks.milestone_basis == "streak"
    assert data.slogan == DEFAULT_CARD_SLOGAN
    assert mentor.MIN_CHARS <= len(data.mentor_message) <= mentor.MAX_CHARS
    assert png.startswith(b"\x89PNG") and len(png) < MAX_BYTES
    check_layout(rendered)


async def test_unknown_member_gets_a_zero_card(app: App, font: fonts.CardFont) -> None:
    cohort = app.settings.cohort("c1")
    with app.db.session() as session:
        data = card_data(session, app.settings, cohort, "wmNobody", date(2026, 11, 2))
    assert (data.name, data.streak, data.total_checkins, data.milestone_day) == (
        "wmNobody",
        0,
        0,
        None,
    )


async def test_the_mentor_message_fits_before_the_start_and_after_the_end(
    app: App, font: fonts.CardFont
) -> None:
    """c1 runs 11-02..11-22: on 11-01 the card (即将开营) welcomes someone about to begin, not
    "欢迎来到训练营的第1天"; after 11-22 it looks back, not "这是你在训练营的第24天"."""
    cohort = app.settings.cohort("c1")
    with app.db.session() as session:
        before = card_data(session, app.settings, cohort, "wmU1", date(2026, 11, 1))
    assert before.cohort_day == 0
    assert "第1天" not in before.mentor_message and "开营" in before.mentor_message
    await seed(app)
    with app.db.session() as session:
        after = card_data(session, app.settings, cohort, "wmU1", date(2026, 11, 24))
    assert (after.cohort_day, after.streak, after.total_checkins) == (23, 0, 7)
    assert "结营" in after.mentor_message and "第23天" not in after.mentor_message
    for data in (before, after):
        assert mentor.MIN_CHARS <= len(data.mentor_message) <= mentor.MAX_CHARS
        check_layout(render_card(data, font))


CONFIG = """
[bot]
data_dir = "{data}"
[database]
url = "sqlite:///{data}/bot.db"
[cards]
font_path = "{font}"
[[cohorts]]
id = "c1"
course = "Python 21天入门"
start_date = "2026-11-02"
length_days = 21
slogan = "21天，遇见更好的自己"
  [[cohorts.groups]]
  chat_id = "{group}"
"""


def _add_member(config: Path, member: str) -> None:
    """``member`` in the config's group (the card is only drawn for a member of the cohort)."""
    from bot.app import App
    from bot.config import load_settings
    from storage import roster

    app = App.open(load_settings(config, env={}))
    try:
        with app.db.unit_of_work_sync() as uow:
            now = datetime(2026, 11, 2, tzinfo=UTC)
            roster.ensure_members(uow.writer, [(member, "小明", "external")], now)
            roster.ensure_memberships(uow.writer, [(GROUP_A, member)])
    finally:
        app.close()


def test_cli_writes_a_card(
    tmp_path: Path, font: fonts.CardFont, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(data=tmp_path, font=font.path, group=GROUP_A), "utf-8")
    out = tmp_path / "card.png"
    _add_member(config, "wmU1")
    # Someone in no group of the cohort gets no card of zeros: one line, exit 2.
    assert main(["--config", str(config), "card", "--member", "nobody", "--cohort", "c1"]) == 2
    assert "训练营 c1 的群里没有成员 nobody" in capsys.readouterr().err
    assert (
        main(
            [
                "--config",
                str(config),
                "card",
                "--member",
                "wmU1",
                "--cohort",
                "c1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "学习证据卡已保存" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.size[0] == 1080
    assert main(["--config", str(config), "card", "--member", "wmU1", "--cohort", "nope"]) == 2


def test_cli_without_a_cjk_font_fails_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.format(data=tmp_path, font=tmp_path / "none.ttf", group=GROUP_A), "utf-8"
    )
    _add_member(config, "wmU1")
    assert main(["--config", str(config), "card", "--member", "wmU1", "--cohort", "c1"]) == 1
    err = capsys.readouterr().err
    assert "无法生成学习证据卡" in err and "fonts-wqy-microhei" in err


def test_identical_inputs_draw_identical_cards(font: fonts.CardFont) -> None:
    with (
        Image.open(io.BytesIO(render_card(sample_card(), font).png)) as first,
        Image.open(io.BytesIO(render_card(sample_card(), font).png)) as second,
    ):
        a, b = first.convert("RGB"), second.convert("RGB")
    assert ImageChops.difference(a, b).getbbox() is None
