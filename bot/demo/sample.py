"""Writes a sample chat log for ``cohortbot import``: archive JSON lines for the demo's two groups
over one week (the demo itself simulates its cohort live, see :mod:`bot.demo.world`).

Deterministic (fixed seed), so ``python -m bot.demo.sample > bot/demo/sample_chat.jsonl`` always
writes the same file. Personas: steady, fading, silent, late joiner, broken-and-rebuilt streak,
homework by link, a recalled check-in, a night owl checking in at 01:30, a chatterbox.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 2, tzinfo=TZ)
DAYS = 7
GROUPS = {
    "A": "wrDemoGroupA0000000000000001",
    "B": "wrDemoGroupB0000000000000002",
}

# (id, name, persona, group)
PEOPLE = [
    ("lin_banzhang", "林班长", "leader", "A"),
    ("wmA01xiaoyu", "小鱼", "steady", "A"),
    ("wmA02ajie", "阿杰", "fading", "A"),
    ("wmA03momo", "默默", "silent", "A"),
    ("wmA04coco", "Coco", "late", "A"),
    ("wmA05daxiong", "大熊", "rebuilt", "A"),
    ("wmA06chengzi", "橙子", "homework", "A"),
    ("wmA07xiaomai", "小麦", "recaller", "A"),
    ("wmA08yezi", "夜猫子", "night", "A"),
    ("wmA09lele", "乐乐", "chatter", "A"),
    ("wmA10shuang", "阿爽", "steady", "A"),
    ("zhou_banzhang", "周班长", "leader", "B"),
    ("wmB01tiantian", "甜甜", "steady", "B"),
    ("wmB02laoliu", "老刘", "fading", "B"),
    ("wmB03xiaobai", "小白", "silent", "B"),
    ("wmB04mumu", "木木", "late", "B"),
    ("wmB05qiqi", "琪琪", "rebuilt", "B"),
    ("wmB06kaka", "卡卡", "homework", "B"),
    ("wmB07nana", "娜娜", "chatter", "B"),
    ("wmB08haozi", "浩子", "steady", "B"),
    ("wmB09yuanyuan", "圆圆", "night", "B"),
]

CHECKINS = [
    "#打卡 Day{d} 今天学了{topic}，跟着视频把例子都敲了一遍",
    "第{d}天打卡：{topic}的练习做完了，有一道题卡了好久终于想通",
    "【打卡】{topic} 学完，笔记整理好了",
    "打卡 {topic}，今天进度有点慢但坚持下来了",
    "Day {d} 打卡 ✅ {topic}",
]
TOPICS = [
    "变量和数据类型",
    "字符串方法",
    "列表和元组",
    "字典和集合",
    "条件判断",
    "for 循环",
    "函数参数",
    "文件读写",
    "异常处理",
    "列表推导式",
    "模块和包",
    "面向对象基础",
]
CHAT = [
    "请问大家 {topic} 这里的练习题第三题怎么理解？",
    "我也卡在这里了，看了答案才明白",
    "老师讲的例子太好懂了",
    "今天加班，晚上回去再补课",
    "有没有一起刷题的小伙伴",
    "哈哈哈哈哈哈",
    "👍👍👍",
    "感谢分享！",
    "收到",
    "原来 {topic} 还可以这样用，学到了",
    "周末打算把前面的内容复习一遍",
    "这个报错是缩进的问题吗？IndentationError",
    "[强][强]",
    "明天见～",
]
LEADER = [
    "今天的学习任务：{topic}，记得晚上 10 点前打卡哦",
    "大家有问题随时在群里问，我看到就回",
    "表扬一下今天按时打卡的同学，继续保持！",
]


# Who introduces themselves on their first day (the fading, silent and chatter ones do not).
INTRODUCES = {"leader", "steady", "late", "rebuilt", "homework", "recaller", "night"}
FOODS = ["火锅", "小笼包", "螺蛳粉", "煎饼果子", "寿司", "红烧肉"]
HOBBIES = ["跑步", "看电影", "弹吉他", "拍照", "爬山", "打羽毛球"]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _active_days(persona: str) -> list[int]:
    return {
        "leader": list(range(DAYS)),
        "steady": list(range(DAYS)),
        "fading": [0, 1, 2, 3],
        "silent": [],
        "late": [3, 4, 5, 6],
        "rebuilt": [0, 1, 2, 4, 5, 6],
        "homework": list(range(DAYS)),
        "recaller": list(range(DAYS)),
        "night": list(range(DAYS)),
        "chatter": list(range(DAYS)),
    }[persona]


def generate(seed: int = 20261102) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    serial = 0
    items: list[dict[str, Any]] = []

    def emit(
        who: tuple[str, str, str, str],
        at: datetime,
        msgtype: str,
        body: dict[str, Any],
        action: str = "send",
    ) -> str:
        nonlocal serial
        serial += 1
        msgid = f"demo_{who[3]}_{serial:05d}"
        item = {
            "msgid": msgid,
            "action": action,
            "from": who[0],
            "from_name": who[1],
            "tolist": [],
            "roomid": GROUPS[who[3]],
            "msgtime": _ms(at),
            "msgtype": msgtype,
            msgtype: body,
        }
        items.append(item)
        return msgid

    for who in PEOPLE:
        _id, name, persona, _group = who
        days = _active_days(persona)
        if persona in INTRODUCES and days:
            food, hobby = rng.choice(FOODS), rng.choice(HOBBIES)
            emit(
                who,
                START + timedelta(days=days[0], hours=8, minutes=rng.randrange(60)),
                "text",
                {"content": f"自我介绍：昵称{name}，最喜欢吃{food}，空闲时喜欢{hobby}"},
            )
        for day in days:
            base = START + timedelta(days=day)
            topic = TOPICS[(day * 2 + rng.randrange(2)) % len(TOPICS)]
            chats = {"chatter": 6, "leader": 2}.get(persona, rng.randrange(1, 4))
            if persona == "fading":
                chats = max(0, 3 - day)
            for _ in range(chats):
                at = base + timedelta(hours=rng.randrange(9, 22), minutes=rng.randrange(60))
                pool = LEADER if persona == "leader" else CHAT
                emit(who, at, "text", {"content": rng.choice(pool).format(topic=topic)})
            if persona in ("leader", "chatter") and day % 2:
                continue
            checkin = rng.choice(CHECKINS).format(d=day + 1, topic=topic)
            if persona == "night":
                # 01:30 the next calendar day still counts for this learning day (starts 04:00).
                at = base + timedelta(days=1, hours=1, minutes=30)
            else:
                at = base + timedelta(hours=rng.randrange(19, 23), minutes=rng.randrange(60))
            if persona == "homework":
                emit(
                    who,
                    at,
                    "text",
                    {"content": f"作业{day + 1}提交：https://gitee.com/demo/py21/hw{day + 1}"},
                )
                continue
            msgid = emit(who, at, "text", {"content": checkin})
            if persona == "recaller" and day == 2:
                emit(
                    who, at + timedelta(minutes=1), "revoke", {"pre_msgid": msgid}, action="recall"
                )
                emit(
                    who,
                    at + timedelta(minutes=3),
                    "text",
                    {"content": checkin.replace("打卡", "打卡（更正）")},
                )
            if rng.random() < 0.1:
                # a second check-in the same day is just a message
                emit(who, at + timedelta(minutes=20), "text", {"content": "补充一下 #打卡 的内容"})
    items.sort(key=lambda i: (i["msgtime"], i["msgid"]))
    for seq, item in enumerate(items, start=1):
        yield {"seq": seq, **item}


def main() -> None:
    for item in generate():
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
