"""Operator mistakes on the command line: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

from typing import Any

import pytest

from bot import cli


def test_an_unknown_log_level_is_an_argument_error(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--log-level", "debugg", "scripts", "lint"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'DEBUGG'" in err and "Traceback" not in err
    # Any case of a real level is fine.
    assert cli.main(["--log-level", "warning", "scripts", "lint"]) == 0
