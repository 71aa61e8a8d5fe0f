"""`python bot.py keys create NAME [--workspace W] [--role member|admin|operator] [--scope S]...`,
`keys list`, `keys revoke NAME`: the HTTP API's keys (engine/api_keys.py).

A local command: whoever can run it holds the process's files (an operator by nature,
engine/authority.py). `create` prints the new key once, on stdout alone (so a script can capture
it); only its hash is stored. A running bot sees a new or revoked key at its next request.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from engine.api_keys import DEFAULT_SCOPES, ROLES, KeyStore
from engine.config import Config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bot.py keys", description="Manage the HTTP API's keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="make a key; it is printed once and only its hash kept")
    create.add_argument("name", help="who or what the key is for (a name, unique)")
    create.add_argument("--workspace", default="default", help="the workspace it acts in (default: default)")
    create.add_argument("--role", default="member", choices=list(ROLES), help="its role there (default: member)")
    create.add_argument("--scope", action="append", dest="scopes", metavar="SCOPE",
                        help=f"a document scope it may read: channel:NAME, channel:*, workspace "
                             f"(repeatable; default: {', '.join(DEFAULT_SCOPES)})")
    sub.add_parser("list", help="the keys' names, workspaces, roles and scopes (never the keys)")
    revoke = sub.add_parser("revoke", help="remove a key: refused from its next request on")
    revoke.add_argument("name")
    return parser


def keys_cli(config: Config, argv: list[str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad usage
        return int(exc.code or 0)
    store = KeyStore(config.data_path)
    if args.command == "create":
        try:
            key = store.create(args.name, args.workspace, args.role, tuple(args.scopes or DEFAULT_SCOPES))
        except ValueError as exc:
            print(f"parley: {exc}", file=sys.stderr)
            return 2
        out.write(key + "\n")
        print(f"key {args.name} created; it is shown this once", file=sys.stderr)
    elif args.command == "list":
        for ident in store.identities():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(ident.created_at))
            out.write(f"{ident.name}\t{ident.workspace}\t{ident.role}\t{','.join(ident.scopes)}\t{when}\n")
    elif not store.revoke(args.name):
        print(f"parley: no key named {args.name}", file=sys.stderr)
        return 1
    else:
        print(f"key {args.name} revoked", file=sys.stderr)
    return 0
