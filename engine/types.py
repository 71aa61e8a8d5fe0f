"""The dataclasses that cross the boundary between adapters and the engine.

Adapters translate platform events into these and the engine's answers back into platform
messages; nothing here knows about Slack, Discord or torch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

from engine.errors import ErrorCode


# Who can read a conversation: a channel any member of the workspace may open; a private channel
# (a Discord channel hidden from @everyone, a Discord private thread); a group DM; a DM; not known.
VISIBILITIES = ("public", "private", "group_dm", "dm", "unknown")


@dataclass(frozen=True)
class Conversation:
    """Where a message was said. One thread is one chat session.

    platform: "slack" | "discord" | "console"
    workspace: Slack team/enterprise id, Discord guild id ("dm" for Discord DMs), "local" in the console
    channel: the channel id (for a Discord thread, its parent channel: settings belong to it)
    thread: the thread id (Slack thread_ts, Discord thread/DM channel id, console thread number)
    visibility: who can read it, as the platform says (VISIBILITIES): documents shared here reach
        the workspace-wide scope only when "public"; "unknown" serves only this conversation
    document_channel: where files shared here are kept when not `channel`: a Discord private
        thread keeps its own, which the rest of its parent channel cannot read

    Neither of the last two is part of a conversation's identity (equality, hash, session key).
    """

    platform: str
    workspace: str
    channel: str
    thread: str
    visibility: str = field(default="unknown", compare=False)
    document_channel: str = field(default="", compare=False)

    @property
    def documents_at(self) -> str:
        """The channel whose documents files shared here become."""
        return self.document_channel or self.channel

    @property
    def session_key(self) -> str:
        return f"{self.platform}/{self.workspace}/{self.channel}/{self.thread}"


@dataclass(frozen=True)
class User:
    """Who is speaking, as the platform identifies them.

    platform_admin is what the platform itself says (Slack workspace admin/owner, Discord
    Manage Server); the engine adds the admin allowlist from config on top (Engine.is_admin).
    """

    id: str
    name: str = ""
    platform_admin: bool = False
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class ThreadMessage:
    """A message said in the thread before the one being answered, as the platform shows it
    (adapters.chat.context): a person's (files and other bots as short placeholders) or Parley's."""

    message_id: str
    role: str  # "user" | "assistant" (Parley's own earlier answer)
    text: str
    user_id: str = ""
    user_name: str = ""


@dataclass(frozen=True)
class SharedPicture:
    """A picture the asker shared with this question, ready for a vision model: bounded, at most
    knowledge.vision_max_side a side, re-encoded without metadata (engine/vision.py)."""

    name: str  # the file's name, for the log
    mime: str  # image/png or image/jpeg
    data: bytes = field(repr=False)  # never shown: a log or a repr names the picture, not its bytes
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class ChatRequest:
    where: Conversation
    user: User
    text: str
    message_id: str = ""  # the platform's id of the message, for logs and dedupe
    # The thread's earlier messages, oldest first, read when Parley joins a thread it did not
    # start (or missed messages in one it holds); merged into the session's history by message id.
    earlier: tuple[ThreadMessage, ...] = ()
    # Whose documents the answer may use, when not `where`'s channel: Slack's assistant panel
    # answers in a DM thread from the channel the user is viewing.
    documents: Conversation | None = None
    # Pictures shared with this message (never earlier ones): a model with `vision: true` receives
    # them as image parts; every model reads their OCR text, which is already in `text`.
    pictures: tuple[SharedPicture, ...] = ()

    @property
    def scope(self) -> Conversation:
        return self.documents or self.where


# ---- what Engine.answer() yields -------------------------------------------------------------

@dataclass(frozen=True)
class Queued:
    """The request waits for a slot; `ahead` requests are before it."""

    ahead: int


@dataclass(frozen=True)
class Reading:
    """Passages of these documents were found for the answer, which the model now reads."""

    files: tuple[str, ...]


@dataclass(frozen=True)
class TextDelta:
    """New answer text, to be appended to what came before."""

    text: str


def named_place(page: object) -> bool:
    """Whether a citation's page is a place named in full ("slide 4", "Sheet1!A1:F40", "page 12
    (scanned)"), shown as it is rather than as "p.4"."""
    return isinstance(page, str) and (page.startswith(("slide ", "page ")) or "!" in page)


def place_label(file: str, page: int | str | None) -> str:
    """"report.pdf p.4", "deck.pptx slide 4", "book.xlsx Sheet1!A1:F40", "scan.pdf page 12
    (scanned)", or the file alone."""
    if not page:
        return file
    return f"{file} {page}" if named_place(page) else f"{file} p.{page}"


@dataclass(frozen=True)
class Source:
    """A passage an answer relied on, shown so a reader can check it."""

    file: str
    page: int | str | None  # the number printed on the page ("6", "iv"), else its index
    excerpt: str
    score: float = 0.0
    version: int = 1

    def label(self) -> str:
        return place_label(self.file, self.page)


@dataclass(frozen=True)
class AnswerDone:
    """The answer is complete. `text` is the whole answer (without the sources footer)."""

    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    sources: tuple[Source, ...] = ()
    history_dropped: int = 0  # turns of the thread that no longer fit and were summarised
    model: str = ""  # the model that wrote it
    latency_s: float = 0.0  # from the question to the whole answer


@dataclass(frozen=True)
class AnswerFailed:
    code: ErrorCode
    message: str
    reference: str
    silent: bool = False  # a repeat refusal inside a rate-limit cool-down: adapters show nothing

    def render(self) -> str:
        return f"{self.message} ({self.code.value}, ref {self.reference})"


AnswerEvent = Union[Queued, Reading, TextDelta, AnswerDone, AnswerFailed]


# ---- admin -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    live: bool
    device: str = ""
    dtype: str = ""
    context_window: int = 0
    description: str = ""


@dataclass(frozen=True)
class StatsReport:
    """A snapshot for /llm-stats: `lines` are short, readable Markdown lines; `values` the raw figures."""

    lines: tuple[str, ...]
    values: dict = field(default_factory=dict)

    def render(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class EngineSnapshot:
    """The engine's state at one moment, for /llm-stats, the metrics and the health check."""

    state: str  # "new" | "ready" | "stopping" | "stopped"
    model_name: str | None  # the live model
    model: dict  # its device, dtype, parameters, load time (Backend.describe)
    scheduler: dict  # running, queued, batch limit, tokens generated (Backend.scheduler_snapshot)
    pressure: dict  # the memory monitor's last reading (MemoryMonitor.snapshot)
    overloaded: bool = False  # new work is refused until memory frees up


# ---- files -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileUpload:
    where: Conversation
    user: User
    filename: str
    data: bytes
    mime_type: str = ""
    uploaded_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class IngestProgress:
    stage: str  # "reading" | "embedding" | "storing"
    done: int
    total: int
    unit: str  # "pages" | "chunks"


ProgressCallback = Callable[[IngestProgress], Union[Awaitable[None], None]]


@dataclass(frozen=True)
class IngestResult:
    filename: str
    pages: int
    chunks: int
    version: int
    duplicate: bool = False  # the same content was already there: nothing was added
    sections: int = 0  # headings found (a document without pages is counted in sections)
    shared_as: str = ""  # the name it was shared under, when another's document had it (filename differs)
    scanned: int = 0  # pages read by OCR (no text layer)


@dataclass(frozen=True)
class DocumentInfo:
    filename: str
    version: int
    pages: int
    chunks: int
    uploader: str
    uploaded_at: float
    sha256: str
    channel: str = ""
    sections: int = 0
    visibility: str = "unknown"  # of the channel it was shared in (Conversation.visibility)
    shared_as: str = ""  # the name it was shared under, when another's document had it
    scanned: int = 0  # pages read by OCR (no text layer)


# ---- summaries -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SaidMessage:
    """One message to summarise, as a platform read it: who said it (a display name, or a
    placeholder's own wording with an empty speaker) and what."""

    speaker: str
    text: str
    at: float = 0.0  # epoch seconds, when known


SummaryProgress = Callable[[int, int], Union[Awaitable[None], None]]  # (parts done, parts in all)


@dataclass(frozen=True)
class Summary:
    """What Engine.summarize made: short points, and how (for the reply's header and the logs)."""

    points: tuple[str, ...]
    messages: int  # messages read
    speakers: tuple[str, ...]  # who spoke, most messages first
    parts: int  # how many parts the messages were summarised in (1: at once)
    model_calls: int
