"""The command framework (SPEC §11): recognising a command, who may run it, help and usage.

Topic modules declare their commands in a :class:`CommandSet`; :func:`bot.app.build_dispatcher`
passes every set to :func:`build_router`, in one place. A message is a command when, in a group,
it @-mentions the bot or starts with ``/``; in a single chat, when it starts with a known command
word (anything else there gets the help). Chinese names first, English aliases second. Every call
is permission-checked before the handler runs: a learner trying a leader command gets a polite
refusal and nothing changes. A handler raising :class:`UsageError` gets a one-line usage reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from bot.config import Settings
from bot.context import Context
from bot.dispatcher import Router
from bot.outbound import Channel, Outbound
from bot.updates import Update
from handlers import mentions
from handlers.text import strip_leading_mentions
from storage import roster


class Role(IntEnum):
    LEARNER = 0
    LEADER = 1
    TEACHER = 2


ROLE_NAMES = {Role.LEARNER: "学员", Role.LEADER: "班长", Role.TEACHER: "老师"}


class UsageError(Exception):
    """Wrong arguments; the framework answers with the command's usage line (and ``str(self)``
    as the reason, when given)."""


@dataclass(frozen=True)
class Call:
    """One parsed command invocation."""

    name: str  # canonical (Chinese) name
    args: str  # the text after the command word, stripped
    words: tuple[str, ...]  # ``args`` split on whitespace, @-mentions left out
    mentions: tuple[str, ...]  # member ids of the people @-mentioned, in order
    unresolved: tuple[str, ...]  # @names that match nobody in the group
    role: Role
    chat_id: str  # "" in a single chat


CommandHandler = Callable[[Update, Context, Call], Awaitable[None]]


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    role: Role
    usage: str
    summary: str
    handler: CommandHandler
    group_only: bool = False


class CommandSet:
    """The commands of one topic module."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.commands: list[Command] = []

    def command(
        self,
        name: str,
        *aliases: str,
        role: Role = Role.LEARNER,
        usage: str = "",
        summary: str,
        group_only: bool = False,
    ) -> Callable[[CommandHandler], CommandHandler]:
        """Declare a command; ``usage`` is the one-line synopsis, e.g. ``兑换 <商品编号>``."""

        def register(handler: CommandHandler) -> CommandHandler:
            self.commands.append(
                Command(name, aliases, role, usage or name, summary, handler, group_only)
            )
            return handler

        return register


def role_of(settings: Settings, chat_id: str, user_id: str) -> Role:
    """The caller's role: in a group, from that group's config; in a single chat, the highest
    role the person has in any group."""
    if chat_id:
        group = settings.group(chat_id)
        groups = [group] if group else []
    else:
        groups = [g for c in settings.cohorts for g in c.groups]
    role = Role.LEARNER
    for group in groups:
        if user_id in group.teachers:
            role = max(role, Role.TEACHER)
        elif user_id in group.leaders:
            role = max(role, Role.LEADER)
    return role


async def reply(update: Update, ctx: Context, text: str, mentions: Sequence[str] = ()) -> None:
    """Answer an update where it came from; the idempotency key makes a redelivered command
    answer once."""
    ctx.facts.replies += 1
    await ctx.send(
        Outbound(
            channel=Channel.REPLY,
            to=update.chat_id or update.sender_id,
            text=text,
            mentions=tuple(mentions),
            key=f"reply:{update.door.namespace}:{update.message_id}:{ctx.facts.replies}",
        )
    )


class _Table:
    """Every command by name and alias, with longest-prefix matching for "兑换A01"-style input."""

    def __init__(self, sets: Iterable[CommandSet]) -> None:
        self.by_word: dict[str, Command] = {}
        self.ordered: list[Command] = []
        for cs in sets:
            for command in cs.commands:
                self.ordered.append(command)
                for word in (command.name, *command.aliases):
                    key = word.lower()
                    if key in self.by_word:
                        raise ValueError(f"command word {word!r} declared twice")
                    self.by_word[key] = command
        self.words = sorted(self.by_word, key=len, reverse=True)

    def match(self, text: str) -> tuple[Command, str] | None:
        lowered = text.lower()
        for word in self.words:
            if lowered.startswith(word):
                rest = text[len(word) :]
                # ASCII aliases need a word boundary ("helpme" is not "help").
                if word.isascii() and rest and not rest[0].isspace():
                    continue
                return self.by_word[word], rest.strip()
        return None


def _command_text(update: Update) -> str | None:
    """The text of a command, or None when the message is not addressed to the bot."""
    text = update.text.strip()
    if update.is_group:
        if update.mentioned_bot:
            text = strip_leading_mentions(text)
        elif not text.startswith(("/", "／")):
            return None
    if text.startswith(("/", "／")):
        text = text[1:]
    return text.strip()


def _resolve_mentions(
    ctx: Context, update: Update, args: str
) -> tuple[list[str], list[str], tuple[str, ...]]:
    """(mentioned member ids, unresolved @names, the argument words without the mentions)."""
    ids = [m for m in update.mentions if m]
    if "@" not in args and "＠" not in args:
        return ids, [], tuple(args.split())
    members: list[tuple[str, str]] = []
    if update.chat_id:
        members = roster.names_in_group(ctx.session, update.chat_id)
    found = mentions.resolve(args, members)
    ids += [m for m in found.ids if m not in ids]
    return ids, list(found.unresolved), tuple(found.rest.split())


def help_text(table: _Table, role: Role, in_group: bool = True) -> str:
    lines = ["可用指令（群里 @我 或以 / 开头）："]
    for command in table.ordered:
        if command.role <= role:
            where = "（群里使用）" if command.group_only and not in_group else ""
            lines.append(f"· {command.usage} —— {command.summary}{where}")
    return "\n".join(lines)


def build_router(*sets: CommandSet) -> Router:
    """One router that recognises, permission-checks and runs every declared command."""
    help_set = CommandSet("help")

    @help_set.command("帮助", "help", "菜单", summary="查看可用指令")
    async def show_help(update: Update, ctx: Context, call: Call) -> None:
        await reply(update, ctx, help_text(table, call.role, update.is_group))

    table = _Table([help_set, *sets])
    router = Router("commands")

    @router.message()
    async def run_command(update: Update, ctx: Context) -> None:
        text = _command_text(update)
        if text is None:
            return
        role = role_of(ctx.settings, update.chat_id, update.sender_id)
        found = table.match(text)
        if found is None:
            if update.is_group or text:
                help_ = help_text(table, role, update.is_group)
                await reply(update, ctx, f"没有找到这个指令。\n{help_}")
            return
        command, args = found
        if ctx.facts.day is not None:
            ctx.uow.activity.count((update.chat_id, update.sender_id, ctx.facts.day), commands=1)
        if command.role > role:
            await reply(
                update, ctx, f"抱歉，「{command.name}」仅限{ROLE_NAMES[command.role]}使用。"
            )
            return
        if command.group_only and not update.is_group:
            await reply(update, ctx, f"「{command.name}」请在群里使用。")
            return
        mentioned, unresolved, words = _resolve_mentions(ctx, update, args)
        call = Call(
            command.name, args, words, tuple(mentioned), tuple(unresolved), role, update.chat_id
        )
        try:
            await command.handler(update, ctx, call)
        except UsageError as exc:
            reason = f"{exc}。" if str(exc) else ""
            await reply(update, ctx, f"{reason}用法：{command.usage}")

    return router
