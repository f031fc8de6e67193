"""The ``cohortbot`` command line (SPEC §15): one function per subcommand, registered in
:func:`build_parser`. Config problems print one line and exit 2."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from bot import logs
from bot.app import App
from bot.clock import SystemClock, learning_day
from bot.config import ConfigError, Settings, load_settings
from storage.db import DatabaseUnavailableError

CONFIG_ENV = "COHORTBOT_CONFIG"


class OperatorError(Exception):
    """A mistake the operator can fix (a path, an argument), already phrased as one line:
    :func:`main` prints it as ``错误：…`` and exits 2."""


def _settings(args: argparse.Namespace, *, need_cohorts: bool = False) -> Settings:
    """The config; with ``need_cohorts``, one without a cohort is a config error (an empty or
    half-written file would otherwise serve, or report, nothing without a word)."""
    path = args.config or os.environ.get(CONFIG_ENV) or "config.toml"
    settings = load_settings(path)
    if need_cohorts and not settings.cohorts:
        raise ConfigError(
            f"cohorts: missing (`{_command_name(args)}` needs at least one [[cohorts]] table)"
        )
    return settings


def _command_name(args: argparse.Namespace) -> str:
    sub = next((v for k, v in vars(args).items() if k.endswith("_command") and v), None)
    return f"{args.command} {sub}" if sub else str(args.command)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    app = App.open(settings)
    app.close()
    print(f"数据库已是最新结构：{_safe_url(settings.database_url)}")
    return 0


def cmd_db_backup(args: argparse.Namespace) -> int:
    from storage.backup import BackupError, backup_sqlite

    settings = _settings(args)
    try:
        size = backup_sqlite(settings.database_url, Path(args.file), overwrite=args.force)
    except BackupError as exc:
        print(f"无法备份：{exc}", file=sys.stderr)
        return 2
    print(f"已备份到 {args.file}（{size // 1024} KB）")
    return 0


def cmd_db_purge(args: argparse.Namespace) -> int:
    from bot.maintenance import purge_old_text

    settings = _settings(args)
    with _opened(settings) as app:
        result = purge_old_text(app.db, settings, app.clock)
    print(
        f"已清除 {settings.message_retention_days} 天前的消息正文：{result.messages} 条消息，"
        f"{result.payloads} 条原始事件"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from bot import importer

    settings = _settings(args)
    app = App.open(settings)
    progress = importer.progress_printer(
        lambda line: print(line, file=sys.stderr, flush=True), importer.PROGRESS_EVERY
    )
    try:
        with importer.stop_on_sigint() as stop:
            report = asyncio.run(importer.import_file(app, args.file, progress=progress, stop=stop))
    except OSError as exc:
        print(f"无法读取 {args.file}：{exc.strerror}", file=sys.stderr)
        return 1
    finally:
        app.close()
    for number, reason in report.errors:
        print(f"{args.file}:{number}: {reason}", file=sys.stderr)
    print(report.summary())
    if report.interrupted:
        print(
            f"导入已中断（Ctrl-C）：前 {report.lines} 行已处理并保存；"
            "重新运行同一条命令会接着导入（已导入的记为重复）",
            file=sys.stderr,
        )
        return 130
    return 1 if report.errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    from bot.report import activity_report

    settings = _settings(args, need_cohorts=True)
    with _opened(settings) as app:
        now = SystemClock().now()
        today = {c.id: learning_day(now, c.timezone, c.day_start_hour) for c in settings.cohorts}
        with app.db.session() as session:
            print(activity_report(session, settings, today))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from bot.cards.fonts import FontNotFoundError
    from bot.cards.member import member_card
    from storage import cohort_dates, roster

    settings = _settings(args)
    try:
        cohort = settings.cohort(args.cohort)
    except KeyError:
        print(f"没有这个训练营 unknown cohort: {args.cohort}", file=sys.stderr)
        return 2
    out = (
        Path(args.out)
        if args.out
        else settings.data_dir / "cards" / f"{cohort.id}-{args.member}.png"
    )
    _check_output(out)
    app = App.open(settings, existing=True)
    try:
        today = learning_day(SystemClock().now(), cohort.timezone, cohort.day_start_hour)
        with app.db.session() as session:
            chats = [g.chat_id for g in cohort.groups]
            if not roster.membership_keys(session, [(c, args.member) for c in chats]):
                raise OperatorError(f"训练营 {cohort.id} 的群里没有成员 {args.member}")
            cohort = cohort_dates.effective(session, cohort)  # 开营/结营, as 我的 shows it
            png = member_card(session, settings, cohort, args.member, today)
    except FontNotFoundError as exc:
        print(f"无法生成学习证据卡：{exc}", file=sys.stderr)
        return 1
    finally:
        app.close()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)
    except OSError as exc:
        raise OperatorError(f"无法写入 {out}：{exc.strerror}") from exc
    print(f"学习证据卡已保存：{out}（{len(png) // 1024} KB）")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    if not 1 <= args.days <= 28:
        print("--days 应在 1 到 28 之间", file=sys.stderr)
        return 2
    return run_demo(Path(args.data_dir), args.days, force=args.force)


def cmd_run(args: argparse.Namespace) -> int:
    from bot.cards.member import card_for
    from bot.server import serve
    from bot.wecom.sender import OutboxSender

    settings = _settings(args, need_cohorts=True)
    clock = SystemClock()
    # Everything handlers send goes through the persistent outbox; the server delivers it.
    app = App.open(settings, clock=clock, sender=OutboxSender(settings, clock), card_maker=card_for)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    try:
        asyncio.run(serve(app, host, port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise OperatorError(f"端口 {host}:{port} 已被占用（另一个进程在用？换 --port）") from None
    finally:
        app.close()
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from bot.simulate import simulate

    return simulate(args)


def cmd_roster_seed(args: argparse.Namespace) -> int:
    from bot.wecom.api import client_from_settings
    from bot.wecom.roster_seed import SeedReport, seed_rosters

    settings = _settings(args, need_cohorts=True)
    clock = SystemClock()
    api = client_from_settings(settings, clock)
    app = App.open(settings, clock=clock)

    async def seed() -> SeedReport:
        try:
            return await seed_rosters(settings, app.db, api, clock, force=args.force)
        finally:
            await api.close()

    try:
        report = asyncio.run(seed())
    finally:
        app.close()
    print(report.summary())
    return 1 if report.errors else 0


def cmd_outbox_deliver(args: argparse.Namespace) -> int:
    import signal

    from bot.wecom.api import client_from_settings
    from bot.wecom.delivery import DeliveryReport, DeliveryWorker
    from bot.wecom.sender import OutboxSender

    settings = _settings(args)
    clock = SystemClock()
    api = client_from_settings(settings, clock)
    app = App.open(settings, clock=clock, sender=OutboxSender(settings, clock))
    worker = DeliveryWorker(settings, app.db, api, clock, batch=args.batch)

    async def deliver() -> DeliveryReport:
        total = DeliveryReport()
        try:
            if not args.drain:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await worker.run(stop, args.interval)
                return total
            return await worker.drain()
        finally:
            await api.close()

    try:
        total = asyncio.run(deliver())
    finally:
        app.close()
    print(
        f"已发送 {total.sent}，稍后重试 {total.retried}，"
        f"限流顺延 {total.deferred}，失败 {total.failed}"
    )
    return 1 if total.failed else 0  # a message failed for good: a script should notice


def cmd_outbox_status(args: argparse.Namespace) -> int:
    from storage import outbox

    settings = _settings(args)
    with _opened(settings) as app, app.db.session() as session:
        counts = outbox.status_counts(session)
    for status in (outbox.PENDING, outbox.SENDING, outbox.SENT, outbox.FAILED):
        print(f"{status}\t{counts.get(status, 0)}")
    return 0


def cmd_export_points(args: argparse.Namespace) -> int:
    from bot.exports import write_points_csv

    settings = _settings(args)
    try:
        settings.cohort(args.cohort)
    except KeyError:
        print(f"没有这个训练营：{args.cohort}", file=sys.stderr)
        return 2
    with _opened(settings) as app, app.db.session() as session:
        if args.csv and args.csv != "-":
            with _open_output(args.csv, "utf-8-sig") as out:
                rows = write_points_csv(session, args.cohort, out, entries=args.entries)
            print(f"已导出 {rows} 行到 {args.csv}")
        else:
            write_points_csv(session, args.cohort, sys.stdout, entries=args.entries)
    return 0


def cmd_scripts_lint(args: argparse.Namespace) -> int:
    """Check the nudge scripts: placeholders, byte limits, coverage (SPEC §8)."""
    from scripts_library import nudges

    directory = Path(args.dir) if args.dir else None
    if directory is not None and not directory.is_dir():
        what = "不是目录" if directory.exists() else "目录不存在"
        raise OperatorError(f"{what}：{directory}")
    scripts, problems = nudges.load_for_lint(directory)
    problems += nudges.lint(scripts)
    for line in problems:
        print(line, file=sys.stderr)
    scenarios = len({s.scenario for s in scripts})
    print(f"{len(scripts)} 套话术，{scenarios} 个场景，{len(problems)} 个问题")
    return 1 if problems else 0


def cmd_digest(args: argparse.Namespace) -> int:
    """Print a group's teacher digest for a learning day (nothing is written)."""
    from datetime import date

    from handlers.digest import group_digests, split_markdown
    from storage import cohort_dates

    settings = _settings(args)
    cohort = settings.cohort_of(args.group)
    if cohort is None:
        print(f"没有配置群 {args.group}", file=sys.stderr)
        return 2
    today = learning_day(SystemClock().now(), cohort.timezone, cohort.day_start_hour)
    try:
        day = date.fromisoformat(args.date) if args.date else today
    except ValueError:
        print(f"日期格式应为 YYYY-MM-DD：{args.date}", file=sys.stderr)
        return 2
    with _opened(settings) as app, app.db.unit_of_work_sync() as uow:
        cohort = cohort_dates.effective(uow.writer, cohort)  # as the teacher's digest does
        if not 1 <= cohort.cohort_day(day) <= cohort.length_days:
            # There is no digest of such a day: the job runs on the cohort's learning days only.
            raise OperatorError(
                f"{day} 不在训练营 {cohort.id} 的日期内：{cohort.start_date} 至 "
                f"{cohort.end_date}（共 {cohort.length_days} 天）"
            )
        if day < today:
            # The nudges' outcomes, redemptions and offers are kept as they stand, no history.
            print(
                f"注意：成功率、待处理兑换和待批准挽回方案是现在的状态，不是 {day} 当天的。",
                file=sys.stderr,
            )
        text = group_digests(uow.session, settings, cohort, [args.group], day, persist=False)
        parts = split_markdown(text[args.group])
        uow.rollback()
    print("\n\n---\n\n".join(parts))
    return 0


def cmd_import_progress(args: argparse.Namespace) -> int:
    """Import course progress: CSV rows of learner id, completion rate, homework rate."""
    from handlers.progress import import_progress, read_lines

    settings = _settings(args)
    try:
        lines = read_lines(args.file)
    except OSError as exc:
        print(f"无法读取 {args.file}：{exc.strerror}", file=sys.stderr)
        return 1
    except UnicodeDecodeError:
        print(f"{args.file} 不是 UTF-8 或 GBK 编码的文本", file=sys.stderr)
        return 1
    app = App.open(settings)
    try:
        with app.db.unit_of_work_sync() as uow:
            imported, errors = import_progress(uow.session, lines, SystemClock().now())
    finally:
        app.close()
    for number, reason in errors:
        print(f"{args.file}:{number}: {reason}", file=sys.stderr)
    print(f"导入 {imported} 行，{len(errors)} 行有问题")
    return 1 if errors else 0


def cmd_export_nudges(args: argparse.Namespace) -> int:
    """Every nudge with its outcome, then success rates per script and per stage (CSV)."""
    import csv

    from storage import nudges

    settings = _settings(args)
    if args.cohort is not None:
        try:
            settings.cohort(args.cohort)
        except KeyError:
            print(f"没有这个训练营：{args.cohort}", file=sys.stderr)
            return 2
    app = App.open(settings, existing=True)
    try:
        out = _open_output(args.csv, "utf-8") if args.csv else sys.stdout
    except OperatorError:
        app.close()
        raise
    try:
        with app.db.session() as session:
            rows = nudges.all_sent(session, args.cohort)
            # The rates of the nudges exported: one cohort's when --cohort names one.
            by_script, by_stage = nudges.success_rates(session, cohort_id=args.cohort)
        writer = csv.writer(out)
        writer.writerow(
            [
                "id",
                "cohort",
                "group",
                "member",
                "day",
                "stage",
                "level",
                "scenario",
                "script",
                "variant",
                "route",
                "status",
                "sent_at",
                "worked",
                "signals",
            ]
        )
        for n in rows:
            writer.writerow(
                [
                    n.id,
                    n.cohort_id,
                    n.chat_id,
                    n.member_id,
                    n.day,
                    n.stage,
                    n.level,
                    n.scenario,
                    n.script_id,
                    n.variant,
                    n.route,
                    n.status,
                    n.sent_at.isoformat() if n.sent_at else "",
                    "" if n.worked is None else int(n.worked),
                    n.signals,
                ]
            )
        writer.writerow([])
        writer.writerow(["rate_by", "key", "worked", "settled", "success_rate"])
        for label, table in (("script", by_script), ("stage", by_stage)):
            for key, (worked, settled) in sorted(table.items()):
                writer.writerow([label, key, worked, settled, f"{worked / settled:.3f}"])
    finally:
        if out is not sys.stdout:
            out.close()
        app.close()
    return 0


@contextmanager
def _opened(settings: Settings) -> Iterator[App]:
    """The app on the configured database (migrated), closed afterwards. For commands that read
    (report, digest, exports, outbox status, purge): a SQLite file that is not there is refused,
    not created empty."""
    app = App.open(settings, existing=True)
    try:
        yield app
    finally:
        app.close()


def _check_output(path: Path) -> None:
    """Refuse an output path that is a directory before any work is done."""
    if path.is_dir():
        raise OperatorError(f"{path} 是一个目录，请给出文件名")


def _open_output(name: str, encoding: str) -> TextIO:
    """``name`` opened for writing CSV, or an :class:`OperatorError` saying why it cannot be."""
    path = Path(name)
    _check_output(path)
    try:
        return open(path, "w", encoding=encoding, newline="")
    except OSError as exc:
        raise OperatorError(f"无法写入 {path}：{exc.strerror}") from exc


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


Command = Callable[[argparse.Namespace], int]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cohortbot", description="企业微信训练营社群机器人")
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or ./config.toml)")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG, INFO, WARNING (default), ERROR or CRITICAL; any case",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply schema migrations").set_defaults(func=cmd_db_upgrade)
    db_sub.add_parser(
        "purge", help="blank message text older than the retention period"
    ).set_defaults(func=cmd_db_purge)
    backup = db_sub.add_parser("backup", help="online backup of a SQLite database to FILE")
    backup.add_argument("file")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.set_defaults(func=cmd_db_backup)

    imp = sub.add_parser("import", help="import archive JSON lines (idempotent)")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import)

    sub.add_parser("report", help="print per-group activity and streaks").set_defaults(
        func=cmd_report
    )

    card = sub.add_parser("card", help="write a member's learning-evidence card (PNG)")
    card.add_argument("--member", required=True, help="member id")
    card.add_argument("--cohort", required=True, help="cohort id")
    card.add_argument("--out", help="output file (default: <data_dir>/cards/<cohort>-<member>.png)")
    card.set_defaults(func=cmd_card)
    run = sub.add_parser("run", help="serve the WeCom callbacks and process the inbox")
    run.add_argument("--host", help="listen address (default: [server].host)")
    run.add_argument("--port", type=int, help="listen port (default: [server].port; 0: any)")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("simulate", help="send one encrypted, signed callback to a running bot")
    sim.add_argument("--url", required=True, help="the bot's base URL, e.g. http://127.0.0.1:8080")
    sim.add_argument("--door", choices=["robot", "aibot", "app"], default="robot")
    sim.add_argument("--chat", default="", help="group chat id (empty: single chat)")
    sim.add_argument("--from", dest="sender", required=True, help="sender user id")
    sim.add_argument("--text", required=True)
    sim.add_argument("--token", help="callback token (default: the door's token env var)")
    sim.add_argument("--aes-key", help="EncodingAESKey (default: the door's env var)")
    sim.add_argument("--corp-id", help="app door ReceiveId (default: [server].corp_id)")
    sim.add_argument("--msgid", help="message id (default: random)")
    sim.set_defaults(func=cmd_simulate)
    ros = sub.add_parser("roster", help="group rosters")
    ros_sub = ros.add_subparsers(dest="roster_command", required=True)
    seed = ros_sub.add_parser("seed", help="seed group rosters from WeCom's customer-group API")
    seed.add_argument("--force", action="store_true", help="also groups that have members")
    seed.set_defaults(func=cmd_roster_seed)

    box = sub.add_parser("outbox", help="the outbound message queue")
    box_sub = box.add_subparsers(dest="outbox_command", required=True)
    deliver = box_sub.add_parser("deliver", help="deliver queued messages to WeCom")
    deliver.add_argument("--drain", action="store_true", help="exit when nothing is due")
    deliver.add_argument("--batch", type=int, default=100, help="rows claimed per round")
    deliver.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    deliver.set_defaults(func=cmd_outbox_deliver)
    box_sub.add_parser("status", help="count queued messages by status").set_defaults(
        func=cmd_outbox_status
    )
    export = sub.add_parser("export", help="export data as CSV")
    export_sub = export.add_subparsers(dest="export_command", required=True)
    points = export_sub.add_parser("points", help="points balances (or the ledger) of a cohort")
    points.add_argument("--cohort", required=True)
    points.add_argument("--csv", nargs="?", const="-", default="-", help="file (default stdout)")
    points.add_argument("--entries", action="store_true", help="every ledger entry, not balances")
    points.set_defaults(func=cmd_export_points)
    scripts = sub.add_parser("scripts", help="the nudge scripts library")
    scripts_sub = scripts.add_subparsers(dest="scripts_command", required=True)
    lint = scripts_sub.add_parser("lint", help="check placeholders, byte limits and coverage")
    lint.add_argument("--dir", help="a directory of script TOML files (default: the library)")
    lint.set_defaults(func=cmd_scripts_lint)

    dig = sub.add_parser("digest", help="print a group's teacher digest")
    dig.add_argument("--group", required=True, help="chat id of the group")
    dig.add_argument("--date", help="learning day YYYY-MM-DD (default: today)")
    dig.set_defaults(func=cmd_digest)

    prog = sub.add_parser("import-progress", help="import course progress CSV")
    prog.add_argument("file")
    prog.set_defaults(func=cmd_import_progress)

    ex_nudges = export_sub.add_parser("nudges", help="nudges, outcomes and success rates")
    ex_nudges.add_argument("--csv", help="write to this file (default: stdout)")
    ex_nudges.add_argument("--cohort", help="only this cohort")
    ex_nudges.set_defaults(func=cmd_export_nudges)

    demo = sub.add_parser("demo", help="run the offline demo on SQLite")
    demo.add_argument("--data-dir", default="data/demo")
    demo.add_argument("--days", type=int, default=28, help="simulated cohort days (1-28)")
    demo.add_argument(
        "--force",
        action="store_true",
        help="also when DIR was not made by the demo: deletes DIR/cohortbot.db (with its -wal, "
        "-shm and -journal files) and the inbox journal DIR/cohortbot.db.inbox/",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


#: A shell's ``$?`` for a program killed by SIGPIPE (128 + 13), as ``yes | head`` leaves it.
SIGPIPE_STATUS = 141


def _stdout_gone() -> bool:
    """Whether standard output is a pipe (or socket) whose reader has closed it."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows); stdout without a file
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    func: Command = args.func
    try:
        code = func(args)
        sys.stdout.flush()  # here, so that a reader gone (`| head`) is seen below
        return code
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # a socket's, not ours to hide
        # `cohortbot digest … | head`: the reader has what it wanted. Stop quietly, with the
        # status of a program killed by SIGPIPE, and let nothing more be written at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except ConfigError as exc:
        print(f"配置错误 config error: {exc}", file=sys.stderr)
        return 2
    except DatabaseUnavailableError as exc:
        print(f"错误：无法打开数据库 {exc.url}：{exc.reason}", file=sys.stderr)
        return 2
    except OperatorError as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
