"""`cohortbot db backup`: SQLite's online backup, taken while another connection writes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.app import App
from bot.clock import ManualClock
from bot.config import parse_settings
from storage import roster
from storage.backup import BackupError, backup_sqlite
from tests.builders import local
from tests.conftest import GROUP_A, base_config

ROOT = Path(__file__).resolve().parent.parent


def _members(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT id FROM member")}


def _open(tmp_path: Path) -> tuple[App, str]:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    settings = parse_settings(base_config(database={"url": url}), env={})
    app = App.open(settings, clock=ManualClock(local(2026, 11, 2, 9)))
    with app.db.unit_of_work_sync() as uow:
        roster.ensure_members(uow.session, [("wmA", "甲", "external")], app.clock.now())
        roster.ensure_memberships(uow.session, [(GROUP_A, "wmA")])
    return app, url


def test_backup_is_a_consistent_snapshot_while_a_writer_is_open(tmp_path: Path) -> None:
    app, url = _open(tmp_path)
    try:
        # Another connection is mid-transaction: its row is not committed, so not backed up.
        writer = sqlite3.connect(tmp_path / "live.db", timeout=5)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO member (id, name, kind, created_at) VALUES ('wmB', '乙', 'external', "
            "'2026-11-02 01:00:00')"
        )
        size = backup_sqlite(url, tmp_path / "out" / "backup.db")
        writer.commit()
        writer.close()
    finally:
        app.close()
    backup = tmp_path / "out" / "backup.db"
    assert size == backup.stat().st_size > 0
    assert _members(backup) == {"wmA"}  # a WAL database, yet the copy stands alone
    assert _members(tmp_path / "live.db") == {"wmA", "wmB"}
    with sqlite3.connect(backup) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_refusals_change_nothing(tmp_path: Path) -> None:
    app, url = _open(tmp_path)
    app.close()
    target = tmp_path / "backup.db"
    target.write_bytes(b"keep me")
    with pytest.raises(BackupError, match="already exists"):
        backup_sqlite(url, target)
    assert target.read_bytes() == b"keep me"
    assert backup_sqlite(url, target, overwrite=True) > 0 and _members(target) == {"wmA"}
    with pytest.raises(BackupError, match="pg_dump"):
        backup_sqlite("postgresql://postgres@127.0.0.1/test", tmp_path / "pg.db")
    with pytest.raises(BackupError, match="no database file"):
        backup_sqlite(f"sqlite:///{tmp_path / 'missing.db'}", tmp_path / "m.db")
    with pytest.raises(BackupError, match="cannot replace the database itself"):
        backup_sqlite(url, tmp_path / "live.db", overwrite=True)
    assert _members(tmp_path / "live.db") == {"wmA"}
    assert not list(tmp_path.glob("*.partial"))


def test_cli_backup(tmp_path: Path) -> None:
    app, url = _open(tmp_path)
    app.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "{url}"\n[[cohorts]]\nid = "c1"\ncourse = "课"\n'
        f'start_date = "2026-11-02"\nlength_days = 21\n[[cohorts.groups]]\nchat_id = "{GROUP_A}"\n',
        encoding="utf-8",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", "--config", str(config), "db", "backup", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            timeout=60,
        )

    ok = run(str(tmp_path / "b.db"))
    assert ok.returncode == 0 and "已备份到" in ok.stdout, ok.stderr
    again = run(str(tmp_path / "b.db"))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert run(str(tmp_path / "b.db"), "--force").returncode == 0


def test_a_directory_or_a_failed_write_leaves_no_partial_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, url = _open(tmp_path)
    app.close()
    folder = tmp_path / "backups"
    folder.mkdir()
    # It said "already exists", and with --force copied the whole database to backups.partial,
    # failed with IsADirectoryError and left the copy behind.
    for overwrite in (False, True):
        with pytest.raises(BackupError, match="backups is a directory; name the backup file"):
            backup_sqlite(url, folder, overwrite=overwrite)
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"")
    with pytest.raises(BackupError, match=r"the backup to .* failed"):
        backup_sqlite(url, a_file / "x.db")

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(BackupError, match=r"failed \(Permission denied\)"):
        backup_sqlite(url, tmp_path / "b.db")
    assert not list(tmp_path.rglob("*.partial"))
