"""`python bot.py knowledge backup DIR | restore DIR | check [--report-only] | stats`.

Run it while the bot is stopped when Chroma is embedded (one process should own its files);
with `chroma.mode: http` it can run beside a live bot.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from engine.config import Config

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bot.py knowledge", description="Maintain Parley's document store.")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup", help="export every live document to a new directory")
    backup.add_argument("dir", type=Path)
    restore = sub.add_parser("restore", help="replace the store with a backup")
    restore.add_argument("dir", type=Path)
    check = sub.add_parser("check", help="integrity check; removes orphan chunks and broken documents")
    check.add_argument("--report-only", action="store_true", help="report problems without repairing them")
    sub.add_parser("stats", help="documents and chunks in the store")
    return parser


def knowledge_cli(config: Config, argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad usage
        return int(exc.code or 0)
    from engine.knowledge.knowledge_base import KnowledgeBase

    # Nothing here embeds, so the model is not loaded (backups are labelled with the packaged
    # embedder's name, which a restore checks).
    kb = KnowledgeBase(config.knowledge, config.data_path, load_embedder=False)
    try:
        if args.command == "backup":
            result = kb.backup(args.dir)
            text = f"Backed up {result['documents']} documents ({result['chunks']} chunks) to {result['path']} " \
                   f"in {result['seconds']} s."
        elif args.command == "restore":
            result = kb.restore(args.dir)
            made = time.strftime("%Y-%m-%d %H:%M", time.localtime(result["backup_created_at"]))
            text = f"Restored {result['documents']} documents ({result['chunks']} chunks) from {result['path']} " \
                   f"(backup of {made}) in {result['seconds']} s."
        elif args.command == "check":
            result = kb.check(repair=not args.report_only)
            text = _render_check(result)
        else:
            result = kb.stats()
            text = (f"{result['documents']} documents, {result['chunks']} chunks "
                    f"(store: {result['store']}, {config.data_path / 'chroma' if result['store'] == 'embedded' else 'server'})")
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"knowledge {args.command}: {exc}")
        return 1
    finally:
        kb.close()
    print(json.dumps(result, indent=2, default=str) if args.json else text)
    if args.command == "check" and not result["ok"] and args.report_only:
        return 1
    return 0


def _render_check(result: dict) -> str:
    lines = [f"Checked {result['documents']} documents and {result['chunks']} chunks in {result['seconds']} s."]
    if result.get("in_progress"):
        lines.append(f"{result['in_progress']} chunks of ingests still running (on this or another replica) left alone.")
    if result["ok"]:
        lines.append("Everything is consistent.")
        return "\n".join(lines)
    verb = "removed" if result["repaired"] else "found (not removed: --report-only)"
    if result["orphans"]:
        lines.append(f"{result['orphans']} orphan chunks (no live document) {verb}.")
    if result["bad_embeddings"]:
        lines.append(f"{result['bad_embeddings']} chunks with a missing or invalid embedding {verb}.")
    for name in result["broken_documents"]:
        lines.append(f"Incomplete document {verb}: {name} (share it again)")
    return "\n".join(lines)
