"""The demo's simulated cohort (SPEC §16): who is in it and what each person says on each day.

Two groups of a 28-day course, about 60 learners with personas (steady, fading, silent from day
1, late joiner, comeback after a nudge, point farmer, night owl), two group leaders and a teacher.
:func:`day_plan` is deterministic for a given day and set of already-nudged learners, so the
demo prints the same story every run; the only feedback is the comeback persona, who comes back
the day after a nudge actually reached WeCom.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

# The chat lines, check-in forms, group ids and timezone are the sample log's (bot.demo.sample).
from bot.demo.sample import CHAT, CHECKINS, FOODS, GROUPS, HOBBIES, LEADER, TZ

START = date(2026, 11, 2)
DAYS = 28
TEACHER = "teacher_wang"
#: Persona -> how many learners of each group have it.
MIX = {
    "steady": 14,
    "night": 2,
    "fading": 4,
    "silent": 3,
    "late": 3,
    "comeback": 2,
    "farmer": 1,
}
LATE_DAY = 4
NAMES = [
    "小鱼",
    "阿杰",
    "默默",
    "可可",
    "大熊",
    "橙子",
    "小麦",
    "乐乐",
    "阿爽",
    "甜甜",
    "老刘",
    "小白",
    "木木",
    "琪琪",
    "卡卡",
    "娜娜",
    "浩子",
    "圆圆",
    "阿明",
    "小雨",
    "晓晓",
    "阿宁",
    "豆豆",
    "果果",
    "小北",
    "阿远",
    "青青",
    "一一",
    "小葵",
    "阿泽",
    "思思",
    "小米",
    "阿飞",
    "糖糖",
    "石头",
    "小满",
    "阿丹",
    "朵朵",
    "小川",
    "阿琳",
    "星星",
    "小树",
    "阿杭",
    "莉莉",
    "小夏",
    "阿蓝",
    "贝贝",
    "小舟",
    "阿峰",
    "悠悠",
    "小禾",
    "阿晨",
    "笑笑",
    "小岩",
    "阿梅",
    "天天",
    "小路",
    "阿桃",
    "洋洋",
    "小溪",
]

TOPICS = [
    "变量和数据类型",
    "字符串方法",
    "列表和元组",
    "字典和集合",
    "条件判断",
    "for循环",
    "while循环",
    "函数参数",
    "作用域",
    "文件读写",
    "异常处理",
    "列表推导式",
    "模块和包",
    "面向对象基础",
    "继承",
    "装饰器",
    "生成器",
    "正则表达式",
    "日期时间",
    "JSON处理",
    "网络请求",
    "爬虫入门",
    "数据清洗",
    "pandas入门",
    "画图",
    "单元测试",
    "虚拟环境",
    "项目实战",
]
FADING_CHAT = ("最近有点忙……", "嗯", "收到")
FARMER_CHAT = ("1", "打卡打卡", "+1", "冲", "哈哈", "顶")


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    persona: str
    group: str  # "A" or "B"

    @property
    def chat_id(self) -> str:
        return GROUPS[self.group]


@dataclass(frozen=True)
class Said:
    """One thing a person does at a local time: a group message (through the archive, or to the
    bot through the robot callback when ``to_bot``)."""

    who: Person
    at: datetime
    text: str
    to_bot: bool = False


def _people() -> list[Person]:
    people: list[Person] = []
    names = iter(NAMES)
    for group in GROUPS:
        for persona, count in MIX.items():
            for i in range(count):
                ident = f"wm{group}{persona[:3]}{i + 1:02d}"
                people.append(Person(ident, next(names), persona, group))
    return people


LEARNERS = _people()
LEADERS = [
    Person("lin_banzhang", "林班长", "leader", "A"),
    Person("zhou_banzhang", "周班长", "leader", "B"),
]
EVERYONE = LEADERS + LEARNERS


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """Cohort day ``day`` (1-based) at ``hour:minute`` local time (hour may be >= 24)."""
    base = datetime.combine(START + timedelta(days=day - 1), time(0), TZ)
    return base + timedelta(hours=hour, minutes=minute)


def joins_on(person: Person) -> int:
    """The cohort day a person joins the group (the late joiners join on day 4)."""
    return LATE_DAY if person.persona == "late" else 1


def _active(person: Person, day: int, nudged: dict[str, int]) -> bool:
    persona = person.persona
    if persona == "silent" or day < joins_on(person):
        return False
    if persona == "fading":
        return day <= 9
    if persona == "comeback":
        back = nudged.get(person.id)
        return day <= 4 or (back is not None and day > back)
    return True


def day_plan(day: int, nudged: dict[str, int]) -> list[Said]:
    """Everything said on cohort day ``day``, in time order. ``nudged`` maps a learner to the
    cohort day their first nudge reached WeCom (the comeback persona returns the day after)."""
    rng = random.Random(f"demo-{day}")
    topic = TOPICS[(day - 1) % len(TOPICS)]
    plan: list[Said] = []
    for leader in LEADERS:
        for text in LEADER:
            plan.append(
                Said(
                    leader,
                    local(day, rng.randrange(9, 12), rng.randrange(60)),
                    text.format(topic=topic),
                )
            )
    for person in LEARNERS:
        if not _active(person, day, nudged):
            continue
        plan.extend(_learner_day(person, day, topic, rng, nudged))
    if day in (7, 14, 21, 28):  # a learner asks the bot for their card, a leader for the board
        plan.append(Said(LEARNERS[0], local(day, 21, 50), "@助手 我的", to_bot=True))
        plan.append(Said(LEADERS[1], local(day, 21, 55), "@助手 排行榜", to_bot=True))
    plan.sort(key=lambda s: (s.at, s.who.id))
    return plan


def _learner_day(
    person: Person, day: int, topic: str, rng: random.Random, nudged: dict[str, int]
) -> list[Said]:
    persona = person.persona
    said: list[Said] = []
    first_day = joins_on(person)
    if day == first_day and persona not in ("fading", "farmer"):
        food, hobby = rng.choice(FOODS), rng.choice(HOBBIES)
        said.append(
            Said(
                person,
                local(day, 8, rng.randrange(60)),
                f"自我介绍：昵称{person.name}，最喜欢吃的食物是{food}，空闲时喜欢{hobby}",
            )
        )
    if persona == "farmer":  # many empty messages and repeated check-ins: the caps hold
        for i in range(12):
            said.append(Said(person, local(day, 10 + i % 10, 5 * i % 60), rng.choice(FARMER_CHAT)))
        for i in range(3):
            said.append(Said(person, local(day, 20, 10 * i), f"#打卡 Day{day} 打卡"))
        return said
    if persona == "fading":
        chats = max(0, 3 - day // 3)
        pool = FADING_CHAT if day > 4 else CHAT
        checks_in = day <= 6
    else:
        chats = rng.randrange(1, 4)
        pool = CHAT
        checks_in = rng.random() > 0.08 or persona == "comeback"
    if persona == "comeback" and nudged.get(person.id) == day - 1:
        said.append(Said(person, local(day, 12, 30), "谢谢老师提醒，前几天太忙了，今天开始补上！"))
    for _ in range(chats):
        at = local(day, rng.randrange(9, 22), rng.randrange(60))
        said.append(Said(person, at, rng.choice(pool).format(topic=topic)))
    if checks_in:
        text = rng.choice(CHECKINS).format(d=day, topic=topic)
        # The night owl checks in at 01:30: still the same learning day (it starts at 04:00).
        hour = 25 if persona == "night" else rng.randrange(19, 22)
        said.append(
            Said(person, local(day, hour, 30 if persona == "night" else rng.randrange(60)), text)
        )
    return said
