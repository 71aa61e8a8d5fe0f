"""Who may do what in Parley: three roles, one table of acts, one check, written once.

Roles, from least to most:
- a **member**: anyone Parley serves in a workspace (Slack workspace, Discord guild) or a DM;
- a **workspace admin** governs *that* workspace's channels, settings and documents: the
  platform's own admins as the adapter reports them for this workspace (`User.platform_admin`:
  Slack admins and owners, Discord Manage Server in that guild or a `discord.admin_roles` role)
  or the config's `admins` lists (platform -> workspace id or "*" -> user ids, Discord `role:ID`);
- an **operator** governs the process, and so every workspace: the live model, the models
  loaded, the rate-limit exemption, the process-wide figures, the audit log of every workspace,
  backups. The config's `operators` lists (platform -> user ids) name them; the console's local
  user is one by nature (whoever holds the terminal holds the process). An operator holds every
  workspace admin's powers too.

Being an admin of one workspace (Manage Server in a guild anyone can create) gives nothing
beyond it. Each act in ACTS names the least role it needs, the scope it reaches and whether the
owner of its target (the sharer of a document) may do it whatever their role. The Engine's
commands ask `Authority.require` (FORBIDDEN with the act's reply, and an audit entry) or
`acting` (the same, then the outcome audited); `allows` answers display decisions (which
figures /llm-stats shows). docs/security.md's table of acts is written from ACTS
(`python -m engine.authority`), and a test fails when they differ.
"""
from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from engine.audit import AuditEntry, AuditLog
from engine.errors import ErrorCode, ParleyError
from engine.types import Conversation, User

log = logging.getLogger(__name__)

# admins[platform][workspace] = user ids (Discord: "role:ID" too); workspace "*" = every workspace
AdminLists = dict[str, dict[str, list[str]]]
# operators[platform] = user ids
OperatorLists = dict[str, list[str]]
ANY_WORKSPACE = "*"
CONSOLE = "console"  # the terminal's platform, and its one user's id (adapters/console.py): they hold the process
API = "api"  # the HTTP API's platform (adapters/http_api): a key's identity (engine/api_keys.py)
API_OPERATOR = "parley:operator"  # the role an operator's key carries: only the HTTP API's authentication sets it


class Role(enum.IntEnum):
    MEMBER = 0
    WORKSPACE_ADMIN = 1
    OPERATOR = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Reach(str, enum.Enum):
    """What an act reaches: the asker's own things, a channel, a workspace, or the whole process."""

    OWN = "own"
    CHANNEL = "channel"
    WORKSPACE = "workspace"
    PROCESS = "process"


@dataclass(frozen=True)
class Act:
    name: str
    role: Role  # the least role that may do it
    reach: Reach
    what: str  # one line, for docs/security.md
    refusal: str = ""  # the reply when refused (acts a member may do are never refused)
    owner_may: bool = False  # the owner of its target (who shared the document) may, whatever their role
    changes: bool = False  # audited when done or failed; acts that only show are audited when refused
    note: str = ""  # a condition the table states (a config key that widens it)


M = Role.MEMBER
WA = Role.WORKSPACE_ADMIN
OP = Role.OPERATOR

ACTS: dict[str, Act] = {a.name: a for a in (
    Act("ask", M, Reach.CHANNEL, "ask Parley (a mention, a thread it holds, a DM, the assistant panel)"),
    Act("share_document", M, Reach.CHANNEL, "share a file that becomes a document of the channel"),
    Act("list_documents", M, Reach.CHANNEL, "list the documents the channel can use"),
    Act("summarize", M, Reach.CHANNEL, "summarise a thread or the channel's recent messages"),
    Act("view_settings", M, Reach.CHANNEL, "read the channel's settings (`/llm-config`)"),
    Act("list_models", M, Reach.PROCESS, "list the configured models and which is live"),
    Act("view_own_usage", M, Reach.OWN, "their own usage and limits, the live model, the queue (short `/llm-stats`)"),
    Act("rate_answer", M, Reach.OWN, "👍 / 👎 an answer and say what was wrong"),
    Act("fresh_start", M, Reach.OWN, "start a fresh conversation in their DM"),
    Act("follow_deletion", M, Reach.CHANNEL,
        "the platform deleted a shared file or its message: Parley forgets the document it became, "
        "while it is still that upload"),
    Act("follow_visibility", M, Reach.CHANNEL,
        "the platform made a channel private or public: its documents leave or join the workspace scope at once"),
    Act("forget_document", WA, Reach.WORKSPACE, "remove a document (`/llm-docs forget`)",
        "Only the uploader or an admin can remove that document.", owner_may=True, changes=True),
    Act("cancel_ingest", WA, Reach.WORKSPACE, "stop a document being indexed (`/llm-docs cancel`)",
        "Only the person who shared it or an admin can cancel that.", owner_may=True, changes=True),
    Act("configure_channel", WA, Reach.CHANNEL, "change the channel's settings (`/llm-config KEY VALUE`, `reset`)",
        "Only admins can change channel settings; anyone can view them.", changes=True),
    Act("configure_workspace", WA, Reach.WORKSPACE, "change the workspace defaults (`/llm-config workspace ...`)",
        "Only admins can change channel settings; anyone can view them.", changes=True),
    Act("view_workspace_stats", WA, Reach.WORKSPACE,
        "the workspace's figures: its questions, documents, feedback, the live model (`/llm-stats`, Home tab)",
        "Only workspace admins can see this workspace's figures."),
    Act("view_audit", WA, Reach.WORKSPACE, "read the workspace's audit log and 👎 comments (`/llm-audit`)",
        "Only workspace admins can read the audit log."),
    Act("switch_model", OP, Reach.PROCESS, "switch the live model for every workspace (`/llm-model NAME`)",
        "Only Parley's operators can switch the model: it answers in every workspace. "
        "`/llm-model` without a name shows which one is live.", changes=True),
    Act("load_model", OP, Reach.PROCESS,
        "load another model beside the live one (`/llm-config model NAME`, NAME not the live model)",
        "Only Parley's operators can have another model loaded (it takes memory from every workspace); "
        "admins can set the live model for a channel.",
        note="when allowed, it is recorded done as its `configure_channel` or `configure_workspace` entry"),
    Act("view_process_stats", OP, Reach.PROCESS,
        "the process's figures across every workspace: model, memory, queue, latency, errors (`/llm-stats`)",
        "Only Parley's operators can see the figures of every workspace."),
    Act("view_all_audit", OP, Reach.PROCESS, "read the audit log and 👎 comments of every workspace",
        "Only Parley's operators can read every workspace's audit log."),
    Act("skip_rate_limits", OP, Reach.PROCESS, "not rate-limited",
        note="workspace admins too with `limits.exempt: admins`; nobody with `none`"),
    Act("export_audit", OP, Reach.PROCESS, "export the audit log as JSON lines (`python bot.py audit export`)"),
    Act("manage_knowledge", OP, Reach.PROCESS,
        "back up, restore, check the document store (`python bot.py knowledge ...`)"),
    Act("manage_api_keys", OP, Reach.PROCESS,
        "make, list and revoke the HTTP API's keys, each an identity of a workspace (`python bot.py keys ...`)"),
)}


def acts_table() -> str:
    """The Markdown table of acts × roles × scope, as docs/security.md shows it."""
    lines = ["| act | who may | reach | audited | what |", "|---|---|---|---|---|"]
    for act in ACTS.values():
        who = {M: "anyone served", WA: "a workspace admin of that workspace, an operator", OP: "an operator"}[act.role]
        if act.owner_may:
            who = "its owner (who shared it), " + who
        if act.note:
            who += f" ({act.note})"
        audited = "done, failed, refused" if act.changes else "refused" if act.refusal else "no"
        lines.append(f"| `{act.name}` | {who} | {act.reach.value} | {audited} | {act.what} |")
    return "\n".join(lines) + "\n"


class Authority:
    """Who is who, and whether they may do an act here; every refusal and every privileged act
    that changes something lands in the audit log."""

    def __init__(self, admins: AdminLists, operators: OperatorLists, exempt: str = "operators"):
        self._admins = admins
        self._operators = {platform: set(ids) for platform, ids in operators.items()}
        self._exempt = exempt  # limits.exempt: operators | admins | none
        self.audit: AuditLog | None = None  # from keep_audit(), once the state store is open

    def keep_audit(self, audit: AuditLog) -> None:
        self.audit = audit

    # ---- who ---------------------------------------------------------------------------------

    def is_operator(self, where: Conversation, user: User) -> bool:
        if where.platform == CONSOLE and user.id == CONSOLE:
            return True
        if where.platform == API and API_OPERATOR in user.roles:
            return True  # `bot.py keys create NAME --role operator`: whoever made it holds the process
        return user.id in self._operators.get(where.platform, ())

    def role_of(self, where: Conversation, user: User) -> Role:
        """`user`'s role in `where`'s workspace."""
        if self.is_operator(where, user):
            return Role.OPERATOR
        if user.platform_admin:  # the adapter reports it for this workspace only
            return Role.WORKSPACE_ADMIN
        by_workspace = self._admins.get(where.platform, {})
        listed = set(by_workspace.get(where.workspace, [])) | set(by_workspace.get(ANY_WORKSPACE, []))
        if user.id in listed or any(f"role:{r}" in listed for r in user.roles):
            return Role.WORKSPACE_ADMIN
        return Role.MEMBER

    def allows(self, act: str, where: Conversation, user: User, owner: str | None = None) -> bool:
        """Whether `user` may do `act` here (its owner `owner` may when the act says so)."""
        spec = ACTS[act]
        return self.role_of(where, user) >= spec.role or (spec.owner_may and owner is not None and owner == user.id)

    def exempt(self, where: Conversation, user: User) -> bool:
        """Whether `user` skips the rate limits here (limits.exempt)."""
        if self._exempt == "none":
            return False
        least = Role.WORKSPACE_ADMIN if self._exempt == "admins" else Role.OPERATOR
        return self.role_of(where, user) >= least

    # ---- the check ---------------------------------------------------------------------------

    async def require(self, act: str, where: Conversation, user: User, *, owner: str | None = None,
                      target: str = "") -> Role:
        """FORBIDDEN with the act's reply unless `user` may do `act` here; a refusal is audited.
        Returns the role they act with."""
        role = self.role_of(where, user)
        if self.allows(act, where, user, owner):
            return role
        error = ParleyError(ErrorCode.FORBIDDEN, ACTS[act].refusal or None)
        await self.record(act, where, user, role, target, "refused", error.reference)
        raise error

    @contextlib.asynccontextmanager
    async def acting(self, act: str, where: Conversation, user: User, *, owner: str | None = None,
                     target: str = "") -> AsyncIterator[Role]:
        """`require`, then the act's body; its outcome (done, or failed with the reference the user
        sees) is audited when the act changes something and the user acted by their role (an owner
        who is a member forgetting their own document is not an admin act)."""
        role = await self.require(act, where, user, owner=owner, target=target)
        audited = ACTS[act].changes and role >= ACTS[act].role and role > Role.MEMBER
        try:
            yield role
        except ParleyError as exc:
            if audited:
                await self.record(act, where, user, role, target, "failed", exc.reference)
            raise
        except Exception as exc:  # unexpected: INTERNAL here, so the entry, the log and the reply share a reference
            error = ParleyError(ErrorCode.INTERNAL)
            log.error("act failed", extra={"act": act, "ref": error.reference}, exc_info=exc)
            if audited:
                await self.record(act, where, user, role, target, "failed", error.reference)
            raise error from exc
        if audited:
            await self.record(act, where, user, role, target, "done", "")

    async def entries(self, where: Conversation, user: User, limit: int) -> list[AuditEntry]:
        """/llm-audit: the newest entries of `where`'s workspace for its admins, of every one for operators."""
        await self.require("view_audit", where, user, target="audit")
        if self.audit is None:
            return []
        if self.allows("view_all_audit", where, user):
            return await self.audit.newest(limit)
        return await self.audit.newest(limit, where.platform, where.workspace)

    async def record(self, act: str, where: Conversation, user: User, role: Role, target: str, outcome: str,
                     reference: str) -> None:
        """One audit entry; the log line is written even when no audit log is open (before start)."""
        entry = AuditEntry(at=time.time(), platform=where.platform, workspace=where.workspace,
                           channel=where.channel, user_id=user.id, user_name=user.name, role=role.label,
                           act=act, target=target[:200], outcome=outcome, reference=reference)
        # (without the reference: the failure's own log line carries it, once)
        log.info("audit", extra={"act": act, "outcome": outcome, "user": user.id, "role": role.label,
                                 "scope": f"{where.platform}/{where.workspace}/{where.channel}",
                                 "target": entry.target})
        if self.audit is not None:
            await self.audit.add(entry)


ACTS_BEGIN = "<!-- acts: generated by `python -m engine.authority`; tests/test_authority.py checks it -->\n"
ACTS_END = "<!-- end acts -->"


def with_acts_table(document: str) -> str:
    """`document` (docs/security.md) with the table between its markers written from ACTS."""
    head, found, rest = document.partition(ACTS_BEGIN)
    if not found or ACTS_END not in rest:
        raise ValueError("the acts table's markers are missing")
    return head + ACTS_BEGIN + acts_table() + ACTS_END + rest.split(ACTS_END, 1)[1]


if __name__ == "__main__":  # python -m engine.authority [docs/security.md]: print the table, or write it there
    import sys
    from pathlib import Path

    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
        path.write_text(with_acts_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(acts_table(), end="")
