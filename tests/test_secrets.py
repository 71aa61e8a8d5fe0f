"""Tokens never reach a log or a reply: a remote model's base_url with credentials
(`http://user:password@host/v1?api_key=…`) is used as written and shown as host[:port] by
`/llm-model`, `/llm-stats` and /metrics; a failing server's detail is logged without them; and a
Slack or Discord session logged at DEBUG through Parley's own logging leaves no token, signing
secret, API key or Authorization value in the log file (nor, for the URL's credentials, in any
record before the redacting filter)."""
from __future__ import annotations

import asyncio
import logging

import pytest

from conftest import make_config
from engine.config import LoggingConfig, MetricsConfig
from engine.core import Engine
from engine.logs import setup_logging
from engine.metrics import MetricsServer
from ops_servers import FakeOpenAI, free_port
from test_discord import discord_factory, until  # noqa: F401 - the fixture is used by name
from test_ops import scrape
from test_slack import ADA, CHANNEL, GRACE, slack_factory  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(300)

USER = "deploy-bot"
PASSWORD = "pw-0123456789-secret"
QUERY_KEY = "sk-query-0123456789abcdef"
URL_SECRETS = (USER, PASSWORD, QUERY_KEY)


@pytest.fixture
def log_file(tmp_path, root_logging_restored):
    """Parley's logging (JSON lines at DEBUG into a file, secrets in the environment); yields
    (setup(environ), read()); the root logger is restored afterwards."""
    root = root_logging_restored
    path = tmp_path / "logs" / "parley.log"

    def setup(environ: dict) -> None:
        setup_logging(LoggingConfig(level="DEBUG", format="json", file=str(path)), tmp_path, environ=environ)

    def read() -> str:
        for handler in root.handlers:
            handler.flush()
        return path.read_text()

    yield setup, read


def raw_records(caplog) -> str:
    return "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)


async def test_a_remote_models_credentials_are_used_and_never_shown(slack_factory, tmp_path, log_file, caplog):
    setup, read = log_file
    server = await FakeOpenAI().start()
    base_url = server.base_url.replace("http://", f"http://{USER}:{PASSWORD}@") + f"?api_key={QUERY_KEY}"
    entry = {"name": "remote", "source": "openai_compatible", "base_url": base_url, "api_model": "m",
             "context_window": 4096, "generation": {"max_new_tokens": 32}}
    engine = Engine(make_config(tmp_path / "data", models=[entry], default_model="remote",
                                knowledge={"enabled": False}))
    await engine.start()
    metrics = MetricsServer(MetricsConfig(enabled=True, port=free_port()), engine.stats, engine.snapshot)
    try:
        h = await slack_factory(engine=engine)
        setup({"SLACK_BOT_TOKEN": h.fake.bot_token, "SLACK_SIGNING_SECRET": h.fake.signing_secret})
        caplog.set_level(logging.DEBUG)
        _, ts = await h.mention("What is the capital of France?", user=ADA)
        assert "Paris" in h.fake.thread_text(CHANNEL, ts), "the credentials are sent as written"
        assert server.headers[0]["Authorization"].startswith("Basic ")

        shown = await h.command("/llm-model", "", ADA) + await h.command("/llm-stats", "", GRACE) \
            + await h.command("/llm-stats", "", ADA)
        assert f"127.0.0.1:{server.port}" in shown[0], shown[0]
        await metrics.start()
        status, scraped = await scrape(metrics.config.port)
        assert status == 200 and f'device="127.0.0.1:{server.port}"' in scraped

        server.mode = "error"  # a failing server: its detail is logged, with the URL but not its secrets
        _, failed = await h.mention("And of Italy?", user=ADA)
        assert "GENERATION_FAILED" in h.fake.thread_text(CHANNEL, failed)
        server.mode = "drop"
        await h.mention("And of Spain?", user=ADA)

        said = shown + [scraped] + [m.text for m in h.fake.messages.values()]
        for secret in URL_SECRETS:
            assert not any(secret in text for text in said), secret
            assert secret not in raw_records(caplog), f"{secret} logged (before any filter)"
        details = [r.detail for r in caplog.records if getattr(r, "detail", "")]
        assert any(f"127.0.0.1:{server.port}/v1/chat/completions" in d for d in details), details
        logged = read()
        for secret in (*URL_SECRETS, h.fake.bot_token, h.fake.signing_secret):
            assert secret not in logged, secret
        assert "GENERATION_FAILED" in logged, "the file has the failures (it was written to)"
    finally:
        await metrics.stop()
        await engine.stop()
        await server.stop()


async def test_a_discord_session_logged_at_debug_leaves_no_token(discord_factory, log_file, caplog):
    setup, read = log_file
    h = await discord_factory()
    setup({"DISCORD_TOKEN": h.fake.token})
    caplog.set_level(logging.DEBUG)
    await h.slash("ada", "llm-model")
    _, thread = await h.mention("Say hello.")
    assert h.fake.bot_messages(thread)
    await asyncio.sleep(0.1)
    assert h.fake.token not in read()
    assert h.fake.token not in raw_records(caplog)
