#!/usr/bin/env python3
"""Parley: a self-hosted LLM assistant for Slack and Discord.

Reads config.yaml, builds the engine, and starts the adapters whose credentials are in the
environment: Slack (SLACK_BOT_TOKEN + SLACK_APP_TOKEN, or SLACK_SIGNING_SECRET in HTTP mode),
Discord (DISCORD_TOKEN). With none of them, or with --console, it chats in the terminal.

  python bot.py                         run (console when no platform is configured)
  python bot.py --console               chat in the terminal (pipe lines in for scripting)
  python bot.py knowledge backup DIR    copy the document store to DIR
  python bot.py knowledge restore DIR   replace the document store with a backup
  python bot.py knowledge check         integrity check; orphans removed
  python bot.py knowledge stats         documents and chunks per scope
  python bot.py audit export [--platform P] [--workspace W] [--feedback]
                                        the audit trail (or the 👎 comments) as JSON lines
  python bot.py --http-api              serve the OpenAI-compatible HTTP API too (http_api in config)
  python bot.py keys create NAME [--workspace W] [--role member|admin|operator] [--scope S]
                                        a key of the HTTP API, printed once; keys list, keys revoke NAME

Environment: PARLEY_CONFIG (config path), SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SLACK_SIGNING_SECRET,
SLACK_API_URL, DISCORD_TOKEN, DISCORD_API_URL; see README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from types import ModuleType

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.config import Config, ConfigError, load_config  # noqa: E402

log = logging.getLogger("parley")

# The chat platforms: each is a package adapters/NAME with configured(env, config) and
# run(engine, config, env, stop). Adding a platform is writing its package and one line here.
PLATFORMS = (
    "slack",
    "discord",
    "http_api",
)


def platform(name: str) -> ModuleType:
    return importlib.import_module(f"adapters.{name}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bot.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $PARLEY_CONFIG, else config.yaml beside bot.py)")
    parser.add_argument("--console", action="store_true",
                        help="chat in the terminal even when Slack or Discord credentials are set")
    parser.add_argument("--thread", metavar="ID", help="console: continue this thread id")
    parser.add_argument("--http-api", action="store_true", help="serve the HTTP API (config http_api.enabled)")
    parser.add_argument("--http-host", metavar="HOST", help="the HTTP API's address (config http_api.host)")
    parser.add_argument("--http-port", metavar="PORT", type=int, help="the HTTP API's port (config http_api.port)")
    parser.add_argument("command", nargs="?", choices=["knowledge", "audit", "keys"], help="maintenance command")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the maintenance command")
    return parser.parse_args(argv)


def _http_flags(config: Config, args: argparse.Namespace) -> None:
    """--http-api, --http-host, --http-port over the config's http_api."""
    config.http_api.enabled = config.http_api.enabled or args.http_api
    config.http_api.host = args.http_host or config.http_api.host
    config.http_api.port = args.http_port or config.http_api.port


def setup_logging(config: Config) -> None:
    from engine.logs import setup_logging as setup

    setup(config.logging, config.data_path)


async def serve(config: Config, args: argparse.Namespace) -> int:
    from engine.core import Engine

    env = os.environ
    platforms = [] if args.console else [p for p in map(platform, PLATFORMS) if p.configured(env, config)]
    use_console = args.console or not platforms

    stop = asyncio.Event()  # tells the adapters to close
    shutdown = asyncio.Event()  # SIGINT/SIGTERM or the console's end: the engine stops first
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.set)

    engine = Engine(config)
    if use_console and sys.stdin.isatty():
        print(f"Loading {config.default_model}…", file=sys.stderr, flush=True)
    await engine.start()
    tasks = []
    try:
        for adapter in platforms:
            name = adapter.__name__.rsplit(".", 1)[-1]
            tasks.append(asyncio.create_task(adapter.run(engine, config, env, stop), name=name))
        if use_console:
            from adapters.console import run_console

            console = asyncio.create_task(run_console(engine, stop, args.thread), name="console")
            console.add_done_callback(lambda _: shutdown.set())  # end of input ends the bot
            tasks.append(console)
        log.info("parley running", extra={"adapters": [t.get_name() for t in tasks]})
        stop_waiter = asyncio.create_task(shutdown.wait())
        fault_waiter = asyncio.create_task(engine.recovery.exit_requested.wait())  # engine/runtime/recovery.py
        await asyncio.wait([stop_waiter, fault_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        # The engine first, while the adapters still run: it refuses new work, cancels the answers
        # in progress and waits until each has been shown in its thread ("answer cancelled") and
        # saved to its session; then it flushes the stores.
        await engine.stop(cancel=True)
        stop.set()
        # Adapters see `stop` and close; give them a moment to post their last messages.
        done, pending = await asyncio.wait(tasks, timeout=15)
        for task in pending:
            task.cancel()
        failed = [t for t in done if not t.cancelled() and t.exception()]
        for task in failed:
            log.error("adapter failed", extra={"adapter": task.get_name()}, exc_info=task.exception())
        if engine.recovery.exit_code is not None:
            return engine.recovery.exit_code  # for the supervisor to restart a fresh process
        return 1 if failed else 0
    finally:
        await engine.stop(cancel=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config)  # validated before anything heavy loads
    except ConfigError as exc:
        print(f"parley: invalid config: {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    _http_flags(config, args)
    if args.command == "knowledge":
        from engine.knowledge.cli import knowledge_cli

        return knowledge_cli(config, args.args)
    if args.command == "audit":
        from engine.audit_cli import audit_cli

        return audit_cli(config, args.args)
    if args.command == "keys":
        from engine.keys_cli import keys_cli

        return keys_cli(config, args.args)
    try:
        return asyncio.run(serve(config, args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
