"""Log format: plain lines on a terminal, JSON otherwise, and ASR_LOG_JSON overrides either way."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from app.config import Settings

# Logs one line the way the server configures logging, with ASR_LOG_JSON read from the environment.
SCRIPT = (
    "import logging; from app.config import Settings; from app.logs import configure_logging; "
    "s = Settings(); configure_logging(s.log_level, s.log_json); logging.getLogger('probe').info('hello there')"
)


def _log_line(log_json: str | None, terminal: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ASR_LOG_JSON"}
    if log_json is not None:
        env["ASR_LOG_JSON"] = log_json
    if not terminal:
        done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
        return done.stderr.strip()
    leader, follower = pty.openpty()  # stderr is a terminal, as when a person runs asr-serve
    try:
        subprocess.run([sys.executable, "-c", SCRIPT], env=env, stderr=follower, check=True)
        return os.read(leader, 65536).decode().strip()
    finally:
        os.close(leader)
        os.close(follower)


def _is_json(line: str) -> bool:
    try:
        return json.loads(line)["message"] == "hello there"
    except (ValueError, KeyError, TypeError):
        return False


@pytest.mark.parametrize(
    "log_json,terminal,expect_json",
    [
        (None, True, False),  # the default, auto: plain for a person at a terminal
        (None, False, True),  # auto: JSON into a pipe, a file or a log collector
        ("true", True, True),
        ("false", False, False),
        ("auto", False, True),
    ],
)
def test_log_format_follows_the_terminal_unless_set(log_json: str | None, terminal: bool, expect_json: bool) -> None:
    line = _log_line(log_json, terminal)
    assert "hello there" in line
    assert _is_json(line) is expect_json, line
    if not expect_json:
        assert " INFO probe [-] hello there" in line


def test_log_json_setting_accepts_auto_and_booleans() -> None:
    assert Settings().log_json == "auto"
    assert Settings(log_json="true").log_json is True
    assert Settings(log_json="0").log_json is False
    with pytest.raises(ValueError):
        Settings(log_json="sometimes")
