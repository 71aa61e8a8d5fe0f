"""Logging: console and rotating file, plain or JSON with the structured fields, secrets redacted."""
from __future__ import annotations

import json
import logging

import pytest

from engine.config import LoggingConfig
from engine.logs import setup_logging

BOT_TOKEN = "xoxb-1111-2222-abcdefghijklmnop"
APP_TOKEN = "xapp-1-A111-222-abcdef0123456789"
DISCORD = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.abcdefghijklmnopqrstuvwxyz0123"
API_KEY = "sk-live-0123456789abcdef"
SIGNING = "8f14e45fceea167a5a36dedd4bea2543"


@pytest.fixture
def logs(tmp_path, root_logging_restored):
    """setup_logging with secrets in the environment; yields a function reading the log file back."""
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "DISCORD_TOKEN": DISCORD,
           "OPENAI_API_KEY": API_KEY, "SLACK_SIGNING_SECRET": SIGNING, "HOME": "/root"}
    root = root_logging_restored

    def setup(fmt: str, **kwargs):
        handlers = setup_logging(LoggingConfig(format=fmt, file="logs/parley.log", **kwargs), tmp_path, environ=env)
        return handlers

    def read() -> str:
        for h in root.handlers:
            h.flush()
        return (tmp_path / "logs" / "parley.log").read_text()

    yield setup, read


def leak_everything(log: logging.Logger) -> None:
    log.info("connecting with %s and %s", BOT_TOKEN, APP_TOKEN, extra={"token": DISCORD, "session": "slack/T1/C1/1"})
    log.warning("headers", extra={"headers": {"Authorization": f"Bearer {API_KEY}"}, "secret": SIGNING})
    log.info("redis at redis://:hunter2pass@db.internal:6379/0 and xoxp-9-9-9-zzzz in text")
    try:
        raise RuntimeError(f"auth failed for token {BOT_TOKEN}")
    except RuntimeError:
        log.exception("slack call failed", extra={"ref": "ab12cd34"})


def test_plain_file_has_no_secrets_and_keeps_structure(logs, capsys):
    setup, read = logs
    setup("plain")
    leak_everything(logging.getLogger("aiohttp.client"))  # a library logger, not only ours
    logging.getLogger("engine.core").info("answered", extra={"session": "slack/T1/C1/1", "tokens": 12})
    text = read()
    for secret in (BOT_TOKEN, APP_TOKEN, DISCORD, API_KEY, SIGNING, "hunter2pass", "xoxp-9-9-9-zzzz"):
        assert secret not in text
        assert secret not in capsys.readouterr().err
    assert "[REDACTED]" in text and "redis://:[REDACTED]@db.internal:6379/0" in text
    assert "answered session=slack/T1/C1/1 tokens=12" in text
    assert "ref=ab12cd34" in text and "Traceback" in text and "RuntimeError: auth failed for token [REDACTED]" in text


def test_json_lines_carry_the_extra_fields(logs):
    setup, read = logs
    setup("json")
    leak_everything(logging.getLogger("parley"))
    logging.getLogger("engine.core").warning("request refused: busy", extra={"code": "QUEUE_FULL", "ref": "0a1b2c3d"})
    entries = [json.loads(line) for line in read().splitlines()]
    refused = entries[-1]
    assert refused["level"] == "WARNING" and refused["logger"] == "engine.core"
    assert refused["msg"] == "request refused: busy" and refused["code"] == "QUEUE_FULL" and refused["ref"] == "0a1b2c3d"
    failed = next(e for e in entries if e["msg"] == "slack call failed")
    assert failed["ref"] == "ab12cd34" and "RuntimeError" in failed["exc"] and BOT_TOKEN not in failed["exc"]
    assert entries[0]["token"] == "[REDACTED]"
    assert entries[1]["headers"] == {"Authorization": "Bearer [REDACTED]"}
    assert all(s not in json.dumps(entries) for s in (BOT_TOKEN, APP_TOKEN, DISCORD, API_KEY, SIGNING))


def test_file_rotates(logs, tmp_path):
    setup, read = logs
    setup("plain", max_mb=0.01, backups=2)  # about 10 KB a file
    log = logging.getLogger("engine.test")
    for i in range(400):
        log.info("line %d %s", i, "x" * 60)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["parley.log", "parley.log.1", "parley.log.2"]
    assert "line 399" in read()


def test_setup_twice_does_not_duplicate_lines(logs):
    setup, read = logs
    setup("plain")
    setup("plain")
    logging.getLogger("engine.test").warning("only once")
    assert read().count("only once") == 1


def test_no_log_call_names_a_field_the_log_record_owns():
    """`extra={"thread": ...}` raises KeyError inside the logging call, but only when the level is
    enabled: a DM's fresh start crashed at INFO while every test ran at WARNING."""
    import ast
    from pathlib import Path

    reserved = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", (), None))) | {"message", "asctime"}
    root = Path(__file__).resolve().parent.parent
    clashes = []
    for path in [root / "bot.py", *(root / "engine").rglob("*.py"), *(root / "adapters").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                        clashes += [f"{path.relative_to(root)}:{node.lineno} {key.value}" for key in keyword.value.keys
                                    if isinstance(key, ast.Constant) and key.value in reserved]
    assert clashes == []
