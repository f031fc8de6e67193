"""``cohortbot simulate``: genuine callbacks for a running bot (SPEC §15), plus the plaintext
builders the tests, the benchmark and the demo share (STYLE habit 9: real wire payloads).

Each callback is built as WeCom builds it (PROTOCOL.md §1), encrypted with the door's
EncodingAESKey and ReceiveId, and signed with its token (PROTOCOL.md §2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from xml.sax.saxutils import escape

import aiohttp

from bot.clock import SystemClock
from bot.config import ConfigError, ServerSettings, load_settings
from bot.doors.crypto import DoorCrypto, signed_request


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def robot_xml(chat: str, sender: str, text: str, msgid: str, name: str = "") -> str:
    """A group-robot text callback (path/99399); ``chat`` "" means a single chat."""
    return (
        "<xml>"
        f"<WebhookUrl>{_cdata('http://127.0.0.1/cgi-bin/webhook/send?key=sim')}</WebhookUrl>"
        f"<ChatId>{_cdata(chat)}</ChatId>"
        f"<From><UserId>{_cdata(sender)}</UserId><Name>{_cdata(name)}</Name>"
        f"<Alias>{_cdata('')}</Alias></From>"
        f"<MsgType>text</MsgType><Text><Content>{_cdata(text)}</Content></Text>"
        f"<MsgId>{escape(msgid)}</MsgId>"
        f"<ChatType>{'group' if chat else 'single'}</ChatType>"
        "</xml>"
    )


def aibot_json(chat: str, sender: str, text: str, msgid: str, quote: str = "") -> str:
    """An AI-bot text callback body before encryption (path/100719)."""
    body: dict[str, object] = {
        "msgid": msgid,
        "aibotid": "aibSIM",
        "chattype": "group" if chat else "single",
        "from": {"userid": sender},
        "response_url": "http://127.0.0.1/cgi-bin/aibot/response?code=sim",
        "msgtype": "text",
        "text": {"content": text},
    }
    if chat:
        body["chatid"] = chat
    if quote:
        body["quote"] = {"msgtype": "text", "text": {"content": quote}}
    return json.dumps(body, ensure_ascii=False)


def app_text_xml(corp_id: str, sender: str, text: str, msgid: str, created: int) -> str:
    """A text message sent to the self-built app (path/90239)."""
    return (
        f"<xml><ToUserName>{_cdata(corp_id)}</ToUserName>"
        f"<FromUserName>{_cdata(sender)}</FromUserName><CreateTime>{created}</CreateTime>"
        f"<MsgType>{_cdata('text')}</MsgType><Content>{_cdata(text)}</Content>"
        f"<MsgId>{escape(msgid)}</MsgId><AgentID>1000002</AgentID></xml>"
    )


def app_member_change_xml(
    corp_id: str, chat: str, detail: str, members: list[str], created: int, scene: int = 1
) -> str:
    """A ``change_external_chat`` update event: ``detail`` is add_member or del_member
    (path/92277 客户群变更事件)."""
    scene_tag = "JoinScene" if detail == "add_member" else "QuitScene"
    items = "".join(f"<Item>{_cdata(m)}</Item>" for m in members)
    return (
        f"<xml><ToUserName>{_cdata(corp_id)}</ToUserName>"
        f"<FromUserName>{_cdata('sys')}</FromUserName><CreateTime>{created}</CreateTime>"
        f"<MsgType>{_cdata('event')}</MsgType><Event>{_cdata('change_external_chat')}</Event>"
        f"<ChatId>{_cdata(chat)}</ChatId><ChangeType>{_cdata('update')}</ChangeType>"
        f"<UpdateDetail>{_cdata(detail)}</UpdateDetail><{scene_tag}>{scene}</{scene_tag}>"
        f"<MemChangeCnt>{len(members)}</MemChangeCnt><MemChangeList>{items}</MemChangeList>"
        "</xml>"
    )


def app_msgaudit_notify_xml(corp_id: str, created: int) -> str:
    """The archive's "new data" event (path/95039)."""
    return (
        f"<xml><ToUserName>{_cdata(corp_id)}</ToUserName>"
        f"<FromUserName>{_cdata('sys')}</FromUserName><CreateTime>{created}</CreateTime>"
        f"<MsgType>{_cdata('event')}</MsgType><Event>{_cdata('msgaudit_notify')}</Event>"
        f"<AgentID>2000004</AgentID></xml>"
    )


def _now_ts() -> int:
    return int(SystemClock().now().timestamp())


async def post_callback(
    session: aiohttp.ClientSession,
    url: str,
    crypto: DoorCrypto,
    plaintext: str,
    json_body: bool,
    timestamp: int | None = None,
) -> tuple[int, str]:
    """POST one encrypted, signed callback; return (status, body)."""
    # A live bot checks the timestamp against its own clock: sign with the wall clock's now.
    ts = _now_ts() if timestamp is None else timestamp
    params, body = signed_request(crypto, plaintext, ts, json_body)
    headers = {"Content-Type": "application/json" if json_body else "text/xml"}
    async with session.post(url, params=params, data=body.encode(), headers=headers) as resp:
        return resp.status, await resp.text()


def simulate(args: argparse.Namespace) -> int:
    """Send one callback as ``cohortbot simulate`` describes; print the answer."""
    server = ServerSettings()
    if args.config or os.environ.get("COHORTBOT_CONFIG") or os.path.exists("config.toml"):
        try:
            path = args.config or os.environ.get("COHORTBOT_CONFIG") or "config.toml"
            server = load_settings(path).server
        except ConfigError as exc:
            print(f"配置错误 config error: {exc}", file=sys.stderr)
            return 2
    door_cfg = getattr(server, args.door)
    token = args.token or os.environ.get(door_cfg.token_env, "")
    key = args.aes_key or os.environ.get(door_cfg.aes_key_env, "")
    if not token or not key:
        print(
            f"缺少 {args.door} 回调的 Token 和 EncodingAESKey：用 --token/--aes-key，"
            f"或设置 ${door_cfg.token_env}/${door_cfg.aes_key_env}",
            file=sys.stderr,
        )
        return 2
    corp_id = (args.corp_id or server.corp_id) if args.door == "app" else ""
    if args.door == "app" and not corp_id:
        # The app door's payloads are encrypted for the CorpID: without it the bot answers 403.
        print(
            "app 回调需要企业 ID：加 --corp-id，或 --config 指向写了 corp_id 的配置",
            file=sys.stderr,
        )
        return 2
    crypto = DoorCrypto(token, key, corp_id)
    msgid = args.msgid or uuid.uuid4().hex
    if args.door == "robot":
        plaintext = robot_xml(args.chat, args.sender, args.text, msgid)
    elif args.door == "aibot":
        plaintext = aibot_json(args.chat, args.sender, args.text, msgid)
    else:
        plaintext = app_text_xml(corp_id, args.sender, args.text, msgid, _now_ts())
    url = args.url.rstrip("/") + door_cfg.path

    async def send() -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            return await post_callback(session, url, crypto, plaintext, args.door == "aibot")

    try:
        status, body = asyncio.run(send())
    except aiohttp.ClientError as exc:
        print(f"无法连接 {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{status} {body}".rstrip())
    return 0 if status == 200 else 1
