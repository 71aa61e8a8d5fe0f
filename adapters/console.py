"""The console adapter: chat with Parley in a terminal, or pipe questions through it.

Interactive (stdin is a terminal): a prompt, answers streamed as they are written, commands.
Piped: one message per input line, each answer printed whole, exit at end of input, so
`printf 'What is the capital of France?\\n' | python bot.py --console` works in a script.
Only answers and short status lines go to stdout; logs go to stderr. Answers, commands and the
final text with its sources come from the chat layer (adapters.chat), in plain text. A line that
is not a command is a message in a DM with Parley, routed like one (adapters.chat.routing):
"new" or "reset" alone starts a fresh thread, as /new does.
"""
from __future__ import annotations

import asyncio
import getpass
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from adapters.chat.answering import stream_answer
from adapters.chat.commands import COMMANDS, Wording, run_command
from adapters.chat.ingest import ingested_text
from adapters.chat.feedback import FeedbackTag
from adapters.chat.markup import PLAIN, Markup
from adapters.chat.routing import Do, MessageFacts, route
from engine.errors import ParleyError
from engine.types import ChatRequest, Conversation, FileUpload, IngestProgress, User

if TYPE_CHECKING:  # the engine object is handed in; importing it here would pull the model code in
    from engine.core import Engine

WORDING = Wording(admins="admins", model_usage="/llm-model NAME", not_served="")
HELP = """Commands:
  /new               start a new thread (forget nothing: the old one stays on disk)
  /upload PATH       add a document (PDF, TXT, MD, HTML, DOCX, CSV, EML) to this console's knowledge
  /docs              list the documents here
  /forget NAME       remove a document
  /cancel NAME       stop indexing a document that is still being read or embedded
  /llm-stats         model, memory, queue, latency, throughput
  /llm-model [NAME]  list models, or switch the live model
  /llm-config [...]  show this console's settings; `/llm-config help` for how to change them
  /llm-audit [N]     what admins and operators did, and refusals; `/llm-audit feedback` the 👎 comments
  /help              this help
  /quit              leave (Ctrl-D works too)
Anything else is a message to Parley."""
# The console's own commands (the chat commands, adapters.chat.commands.COMMANDS, come beside them).
# Its user is an operator (engine/authority.py): whoever holds the terminal holds the process.
CONSOLE_COMMANDS = ("/new", "/upload", "/docs", "/forget", "/cancel", "/help", "/quit", "/exit")


class ConsoleReply:
    """An answer in the terminal: streamed as written when interactive, printed whole when piped."""

    def __init__(self, console: ConsoleAdapter):
        self.console = console
        self.raw = ""

    @property
    def opened(self) -> bool:
        return bool(self.raw)

    @property
    def messages(self) -> int:
        return 1 if self.raw else 0

    @property
    def edits(self) -> int:
        return 0  # a terminal is written to, never edited

    async def open(self, text: str) -> None:
        pass  # no placeholder in a terminal: the prompt waits

    async def final_markup(self, markup: Markup) -> Markup:
        return markup

    async def status(self, text: str) -> None:
        if self.console.interactive:
            self.console.status(text)

    async def append(self, delta: str) -> None:
        self.raw += delta
        if self.console.interactive:
            self.console.print(delta, end="")

    async def finish(self, final_text: str, feedback: FeedbackTag | None = None) -> None:
        shown = PLAIN.render(self.raw.strip())
        if self.console.interactive and self.raw and final_text.startswith(shown):
            final_text = final_text[len(shown):].lstrip("\n")  # the answer itself is on screen already
            self.console.print()
        if final_text:
            self.console.print(final_text)

    async def replace(self, text: str) -> None:
        if self.raw and self.console.interactive:
            self.console.print()
        self.console.status(text)

    async def discard(self) -> None:
        if self.raw and self.console.interactive:
            self.console.print()


class ConsoleAdapter:
    def __init__(self, engine: Engine, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 interactive: bool | None = None, thread: str | None = None):
        self.engine = engine
        self.stdin = stdin
        self.out = stdout
        self.interactive = stdin.isatty() if interactive is None else interactive
        self.user = User(id="console", name=getpass.getuser())
        self._thread_file = engine.config.data_path / "console_thread"
        self.thread = thread or self._initial_thread()
        self._uploads: dict[str, asyncio.Task] = {}  # file name -> its ingest, running while lines are read

    # ---- threads -----------------------------------------------------------------------------

    def _initial_thread(self) -> str:
        """Interactive sessions resume the last console thread; piped runs start a fresh one."""
        if self.interactive and self._thread_file.exists():
            return self._thread_file.read_text().strip() or self._new_thread_id()
        return self._new_thread_id()

    def _new_thread_id(self) -> str:
        thread = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1000000:06d}"
        if self.interactive:
            self._thread_file.parent.mkdir(parents=True, exist_ok=True)
            self._thread_file.write_text(thread)
        return thread

    @property
    def where(self) -> Conversation:
        return Conversation(platform="console", workspace="local", channel="console", thread=self.thread)

    # ---- I/O ---------------------------------------------------------------------------------

    def print(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def status(self, text: str) -> None:
        """A short status line: dimmed in a terminal, plain when piped."""
        self.print(f"\x1b[2m{text}\x1b[0m" if self.interactive else text)

    def _start_reader(self, loop: asyncio.AbstractEventLoop, lines: asyncio.Queue) -> None:
        """Read stdin on a daemon thread, so a pending read never blocks the loop or the exit."""

        def read() -> None:
            for line in self.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=read, name="console-stdin", daemon=True).start()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._start_reader(asyncio.get_running_loop(), lines)
        if self.interactive:
            self.print(f"Parley on {self.engine.live_model}. Type a message, or /help. (thread {self.thread})")
        while not stop.is_set():
            if self.interactive:
                self.print("you> ", end="")
            getter = asyncio.ensure_future(lines.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                break
            line = getter.result()
            if line is None:
                break
            if line.strip() and not await self.handle(line.strip()):
                break
        await self.settle_uploads()
        if self.interactive:
            self.print("bye")

    # ---- commands ----------------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """Handle one input line; False means quit."""
        if not line.startswith("/"):
            await self.say(line)
            return True
        command, _, rest = line.partition(" ")
        command = command.lower()
        rest = rest.strip()
        if command not in ("/cancel", "/help", "/upload"):
            await self.settle_uploads()  # a question or command after an upload sees its document
        try:
            if command in ("/quit", "/exit"):
                return False
            if command == "/help":
                self.print(HELP)
            elif command == "/cancel":
                name = " ".join(_words(rest))
                cancelled = await self.engine.cancel_ingest(self.where, name, self.user)
                self.status(f"Cancelling {name}…" if cancelled else f"Nothing named {name or '(none given)'} is being indexed.")
            elif command == "/new":
                self.fresh_start()
            elif command == "/upload":
                await self.upload(" ".join(_words(rest)))
            elif command == "/docs":
                await self.docs()
            elif command == "/forget":
                name = " ".join(_words(rest))
                removed = await self.engine.delete_document(self.where, name, self.user)
                self.status(f"Removed {name} ({removed} chunks).")
            elif command[1:] in COMMANDS:
                self.print(await run_command(command[1:], self.engine, self.where, self.user, rest, PLAIN, WORDING))
            else:
                self.status(f"Unknown command {command}. /help lists them.")
        except ParleyError as exc:
            self.status(exc.render())
        return True

    async def say(self, line: str) -> None:
        """A message to Parley: the console is a DM with one person (nothing in it is a file or a mention)."""
        action = route(MessageFacts(text=line, is_dm=True))
        if action.do is Do.FRESH_START:
            self.fresh_start()
        elif action.do is Do.ANSWER:
            await stream_answer(self.engine, ChatRequest(where=self.where, user=self.user, text=line),
                                ConsoleReply(self), PLAIN)

    def fresh_start(self) -> None:
        """A new thread; the old one stays on disk until it expires."""
        self.thread = self._new_thread_id()
        self.status(f"New thread {self.thread}.")

    async def upload(self, path_text: str) -> None:
        """Start indexing a file; it runs while further lines are read (so /cancel can stop it)."""
        path = Path(path_text).expanduser()
        if not path_text or not path.is_file():
            self.status(f"No such file: {path_text or '(none given)'}")
            return
        data = await asyncio.to_thread(path.read_bytes)
        self.status(f"Reading {path.name}…")
        progress = ConsoleProgress(self, path.name)
        task = asyncio.create_task(self._ingest(path.name, data, progress))
        key = f"{path.name}-{id(task)}"
        self._uploads[key] = task
        task.add_done_callback(lambda _: self._uploads.pop(key, None))
        # Read on once the engine has taken the file in hand: a /cancel on the next line finds it.
        started = asyncio.ensure_future(progress.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()

    async def _ingest(self, name: str, data: bytes, progress: ConsoleProgress) -> None:
        try:
            result = await self.engine.ingest(
                FileUpload(where=self.where, user=self.user, filename=name, data=data), progress)
        except ParleyError as exc:
            progress.clear()
            self.status(f"I couldn't index {name}: {exc.render()}")
            return
        progress.clear()
        self.status(ingested_text(result, result.filename))

    async def settle_uploads(self) -> None:
        """Wait for the uploads in progress (their outcome is printed by each)."""
        while self._uploads:
            await asyncio.gather(*list(self._uploads.values()), return_exceptions=True)

    async def docs(self) -> None:
        documents = await self.engine.list_documents(self.where)
        if not documents:
            self.status("No documents here yet. /upload PATH adds one.")
            return
        for d in documents:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.uploaded_at))
            size = f"{d.pages} pages" if d.pages else f"{d.sections} sections"
            self.print(f"{d.filename}  v{d.version}  {size}  {d.chunks} chunks  {when}")


class ConsoleProgress:
    """An ingest's progress: one line rewritten in a terminal; piped, a plain line when a stage
    starts and then at most every PIPED_EVERY_S seconds, so a script sees it is still working."""

    PIPED_EVERY_S = 2.0
    STAGES = {"reading": "Reading", "embedding": "Embedding", "storing": "Storing"}

    def __init__(self, console: ConsoleAdapter, name: str):
        self.console = console
        self.name = name
        self.started = asyncio.Event()  # set at the first report: the engine has the file in hand
        self._stage = ""
        self._printed_at = 0.0

    def __call__(self, p: IngestProgress) -> None:
        self.started.set()
        text = f"{self.STAGES.get(p.stage, p.stage)} {self.name}: {p.done}/{p.total} {p.unit}"
        out = self.console.out
        if self.console.interactive:
            out.write(f"\r\x1b[2m{text}\x1b[0m\x1b[K")
            out.flush()
            return
        now = time.monotonic()
        if p.stage != self._stage or now - self._printed_at >= self.PIPED_EVERY_S:
            self.console.print(text)
            self._stage = p.stage
            self._printed_at = now

    def clear(self) -> None:
        if self.console.interactive:
            self.console.out.write("\r\x1b[K")
            self.console.out.flush()


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


async def run_console(engine: Engine, stop: asyncio.Event, thread: str | None = None) -> None:
    await ConsoleAdapter(engine, thread=thread).run(stop)
