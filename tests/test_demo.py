"""`cohortbot demo`'s data directory: it replaces its own database on every run and never deletes
one it did not create (a production ``data_dir`` given as ``--data-dir`` by mistake)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.demo import MARKER, ForeignDataError, prepare_data_dir


def foreign_data(folder: Path) -> dict[str, bytes]:
    """A production-like data directory: a database with its WAL and an inbox journal segment
    holding callbacks a killed server answered but had not processed."""
    files = {
        "cohortbot.db": b"SQLite format 3\x00production",
        "cohortbot.db-wal": b"wal frames",
        "cohortbot.db.inbox/1234-0.journal": b"answered callbacks",
        "config.toml": b'data_dir = "data"\n',
    }
    for name, body in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(body)
    return files


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("keep", ["cohortbot.db", "cohortbot.db.inbox/1234-0.journal"])
def test_the_demo_refuses_a_directory_with_a_database_it_did_not_create(
    tmp_path: Path, keep: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A foreign database, or only a foreign inbox journal: one line, exit 2, nothing touched."""
    data = tmp_path / "data"
    data.mkdir()
    for name in foreign_data(data):
        if name != keep and name != "config.toml":
            (data / name).unlink()
    before = snapshot(data)
    assert main(["demo", "--data-dir", str(data), "--days", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert "不是演示创建的" in err and "--force" in err and keep.split("/")[0] in err
    assert snapshot(data) == before  # no marker, no database, no cards


def test_a_foreign_database_and_inbox_journal_survive_untouched(tmp_path: Path) -> None:
    files = foreign_data(tmp_path)
    with pytest.raises(ForeignDataError):
        prepare_data_dir(tmp_path)
    assert snapshot(tmp_path) == {
        "cohortbot.db": files["cohortbot.db"],
        "cohortbot.db-wal": files["cohortbot.db-wal"],
        "cohortbot.db.inbox": None,
        "cohortbot.db.inbox/1234-0.journal": files["cohortbot.db.inbox/1234-0.journal"],
        "config.toml": files["config.toml"],
    }


def test_the_demo_replaces_its_own_database_run_after_run(tmp_path: Path) -> None:
    """A fresh directory (a fresh clone's data/demo) is created and marked; the next run clears
    the previous run's database, side files and inbox journal, and leaves other files."""
    data = tmp_path / "data" / "demo"
    db = prepare_data_dir(data)
    assert db == data / "cohortbot.db" and (data / MARKER).is_file()
    assert not db.exists()
    # What a run leaves behind.
    db.write_bytes(b"demo")
    Path(f"{db}-wal").write_bytes(b"wal")
    (data / "cohortbot.db.inbox").mkdir()
    (data / "cohortbot.db.inbox" / "9-0.journal").write_bytes(b"demo callbacks")
    (data / "cards").mkdir()
    (data / "cards" / "card.png").write_bytes(b"png")
    assert prepare_data_dir(data) == db
    assert snapshot(data) == {
        MARKER: (data / MARKER).read_bytes(),
        "cards": None,
        "cards/card.png": b"png",
    }


def test_force_clears_a_directory_the_demo_did_not_create(tmp_path: Path) -> None:
    foreign_data(tmp_path)
    prepare_data_dir(tmp_path, force=True)
    assert sorted(snapshot(tmp_path)) == [MARKER, "config.toml"]


def test_the_force_flag_says_what_it_deletes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--force" in help_text and "deletes DIR/cohortbot.db" in help_text
    assert "DIR/cohortbot.db.inbox/" in help_text


def _database_with(path: Path, cohorts: list[str], chats: list[str]) -> None:
    import sqlite3

    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE cohort (id TEXT PRIMARY KEY)")
        con.execute("CREATE TABLE chat_group (chat_id TEXT PRIMARY KEY)")
        con.executemany("INSERT INTO cohort VALUES (?)", [(c,) for c in cohorts])
        con.executemany("INSERT INTO chat_group VALUES (?)", [(c,) for c in chats])
    con.close()


def test_a_demo_database_from_before_the_marker_is_still_the_demos(tmp_path: Path) -> None:
    """A checkout whose data/demo was made before the marker existed runs `make demo` as before;
    a database with any cohort or group the bundled config lacks stays refused."""
    from bot.config import load_settings
    from bot.demo import CONFIG

    demo = load_settings(CONFIG, env={})
    ids = [c.id for c in demo.cohorts]
    chats = [g.chat_id for c in demo.cohorts for g in c.groups]
    old = tmp_path / "old"
    old.mkdir()
    _database_with(old / "cohortbot.db", ids, chats)
    assert prepare_data_dir(old) == old / "cohortbot.db" and not (old / "cohortbot.db").exists()
    prod = tmp_path / "prod"
    prod.mkdir()
    _database_with(prod / "cohortbot.db", [*ids, "py21-2026-11"], chats)
    with pytest.raises(ForeignDataError):
        prepare_data_dir(prod)
    assert (prod / "cohortbot.db").exists()
