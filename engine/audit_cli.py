"""`python bot.py audit export [--platform P] [--workspace W] [--feedback] > audit.jsonl`.

The audit trail (engine/audit.py), oldest first, one JSON object a line; with --feedback the
comments left with 👎 instead. A local command: whoever can run it holds the process's files
(an operator by nature, engine/authority.py). It reads the state store the bot uses (SQLite
under data_dir, or Redis with `sessions.backend: redis`), so it can run beside a live bot.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from typing import TextIO

from engine.config import Config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bot.py audit", description="Export Parley's audit trail as JSON lines.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="every entry kept, oldest first, one JSON object a line")
    export.add_argument("--platform", help="only this platform's entries (slack, discord, console)")
    export.add_argument("--workspace", help="only this workspace's (a Slack team id, a Discord guild id)")
    export.add_argument("--feedback", action="store_true", help="the comments left with 👎 instead")
    return parser


def _wanted(platform: str, workspace: str, args: argparse.Namespace) -> bool:
    return (args.platform is None or platform == args.platform) and (args.workspace is None or workspace == args.workspace)


def _write(rows: Iterable[dict], out: TextIO) -> int:
    n = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        n += 1
    return n


def audit_cli(config: Config, argv: list[str], out: TextIO = sys.stdout) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad usage
        return int(exc.code or 0)
    if args.feedback:
        from engine.feedback import open_feedback

        book = open_feedback(config)
        try:
            comments = reversed(book.store.comments(sys.maxsize))  # oldest first, as the audit entries
            n = _write((dataclasses.asdict(c) for c in comments if _wanted(c.platform, c.workspace, args)), out)
        finally:
            book.store.close()
    else:
        from engine.audit import open_audit_store

        store = open_audit_store(config)
        try:
            n = _write((dataclasses.asdict(e) for e in store.entries() if _wanted(e.platform, e.workspace, args)), out)
        finally:
            store.close()
    print(f"{n} {'comments' if args.feedback else 'entries'} exported", file=sys.stderr)
    return 0
