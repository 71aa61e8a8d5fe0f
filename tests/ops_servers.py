"""Real servers for the scale-out tests, started and stopped by the tests themselves.

- Redis: Debian's redis-server on a free loopback port, nothing saved to disk.
- Chroma: `chroma run` (the chromadb CLI in the venv) on a temp dir.
- Parley itself: `python bot.py` serving the fake Slack in HTTP mode (SlackBotProcess).
- An OpenAI-compatible chat server: aiohttp on loopback speaking the streaming protocol
  (server-sent events of chat.completion.chunk objects, then `data: [DONE]`), like vLLM's.
A test whose server binary is missing is skipped with the reason; CI installs redis-server.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SlackBotProcess:
    """One real `python bot.py` serving the fake Slack (`fake`) in HTTP mode with `config` (its
    `slack` and `logging` sections are set here) and `env` added to the environment; its stderr
    (the log) goes to a file the test reads."""

    def __init__(self, name: str, tmp: Path, fake, config: dict, env: dict[str, str]):
        import yaml

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/slack/events"
        self.log = tmp / f"{name}.log"
        self.config = tmp / f"{name}.yaml"
        served = {**config, "slack": {"mode": "http", "port": self.port, "stream_interval_s": 0.2},
                  "logging": {"file": ""}}
        self.config.write_text(yaml.safe_dump(served))
        self.env = {**os.environ, "PARLEY_CONFIG": str(self.config), "SLACK_BOT_TOKEN": fake.bot_token,
                    "SLACK_SIGNING_SECRET": fake.signing_secret, "SLACK_API_URL": fake.api_url,
                    "HF_HUB_OFFLINE": "1", **env}
        for other in ("DISCORD_TOKEN", "SLACK_APP_TOKEN"):
            self.env.pop(other, None)
        with open(self.log, "wb") as stderr:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "bot.py")], cwd=ROOT, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)

    def logged(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)

    async def ready(self, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while not self.logged("slack listening"):
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the bot did not start"
            await asyncio.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM (a graceful shutdown), its exit code; killed after 60 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextlib.contextmanager
def redis_server(directory: Path):
    """A redis-server of our own; yields its URL."""
    binary = shutil.which("redis-server") or (Path("/usr/bin/redis-server") if Path("/usr/bin/redis-server").exists() else None)
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    import redis

    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(directory), "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for(lambda: redis.Redis.from_url(url).ping(), 15, "redis-server", proc)
        yield url
    finally:
        _stop(proc)


@contextlib.contextmanager
def chroma_server(directory: Path):
    """`chroma run` on `directory`; yields (host, port)."""
    binary = Path(sys.executable).parent / "chroma"
    if not binary.exists() and shutil.which("chroma") is None:
        pytest.skip("the chroma CLI is not installed (pip install chromadb)")
    binary = binary if binary.exists() else Path(shutil.which("chroma"))
    port = free_port()
    proc = subprocess.Popen([str(binary), "run", "--path", str(directory), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2) as resp:
            return resp.status == 200

    try:
        _wait_for(up, 60, "chroma run", proc)
        yield "127.0.0.1", port
    finally:
        _stop(proc)


# ---- an OpenAI-compatible chat server ---------------------------------------------------------

@dataclass
class FakeOpenAI:
    """Answers every chat completion by streaming `reply` word by word.

    mode: "ok" | "error" (HTTP 500) | "drop" (closes the stream after a few chunks) | "slow"
    (a chunk every `delay` seconds, for cancellation tests).
    """

    reply: str = "Paris is the capital of France."
    mode: str = "ok"
    delay: float = 0.0
    api_key: str = ""
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    disconnected: int = 0  # streams the client closed before the end
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> "FakeOpenAI":
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        if self.mode == "error":
            return web.json_response({"error": {"message": "CUDA out of memory", "type": "server_error"}}, status=500)
        assert body.get("stream") is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        words = self.reply.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        max_tokens = body.get("max_tokens") or len(pieces)
        finish = "length" if max_tokens < len(pieces) else "stop"
        pieces = pieces[:max_tokens]

        def chunk(delta: dict, finish_reason=None, usage=None) -> bytes:
            data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            if usage is not None:
                data = {**data, "choices": [], "usage": usage}
            return f"data: {json.dumps(data)}\n\n".encode()

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                if self.mode == "drop" and i == 2:
                    request.transport.close()  # the server dies mid-answer
                    return resp
                await resp.write(chunk({"content": piece}))
                if self.delay:
                    await asyncio.sleep(self.delay)
            await resp.write(chunk({}, finish_reason=finish))
            if (body.get("stream_options") or {}).get("include_usage"):
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                await resp.write(chunk({}, usage={"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                                                  "total_tokens": prompt_tokens + len(pieces)}))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected += 1
            raise
        return resp
