"""The console adapter: chat with Parley in a terminal, or pipe questions through it.

Interactive (stdin is a terminal): a prompt, answers streamed as they are written, commands.
Piped: one message per input line, each answer printed whole-line, exit at end of input, so
`printf 'What is the capital of France?\\n' | python bot.py --console` works in a script.
Only answers and short status lines go to stdout; logs go to stderr.
"""
from __future__ import annotations

import asyncio
import getpass
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from engine.core import Engine
from engine.errors import ParleyError
from engine.types import (
    AnswerDone,
    AnswerFailed,
    ChatRequest,
    Conversation,
    FileUpload,
    IngestProgress,
    Queued,
    Source,
    TextDelta,
    User,
)

HELP = """Commands:
  /new               start a new thread (forget nothing: the old one stays on disk)
  /upload PATH       add a document (PDF, TXT, MD, HTML, DOCX, CSV, EML) to this console's knowledge
  /docs              list the documents here
  /forget NAME       remove a document
  /llm-stats         model, memory, queue, latency, throughput
  /llm-model [NAME]  list models, or switch the live model
  /llm-config [...]  show this console's settings; `/llm-config help` for how to change them
  /help              this help
  /quit              leave (Ctrl-D works too)
Anything else is a message to Parley."""


def format_sources(sources: tuple[Source, ...]) -> str:
    lines = ["Sources:"]
    for i, s in enumerate(sources, 1):
        excerpt = " ".join(s.excerpt.split())
        lines.append(f"  [{i}] {s.label()}" + (f' — "{excerpt}"' if excerpt else ""))
    return "\n".join(lines)


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

    def _print(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def _status(self, text: str) -> None:
        """A short status line: dimmed in a terminal, plain when piped."""
        self._print(f"\x1b[2m{text}\x1b[0m" if self.interactive else text)

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
            self._print(f"Parley on {self.engine.live_model}. Type a message, or /help. (thread {self.thread})")
        while not stop.is_set():
            if self.interactive:
                self._print("you> ", end="")
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
            line = line.strip()
            if not line:
                continue
            if not await self.handle(line):
                break
        if self.interactive:
            self._print("bye")

    # ---- commands ----------------------------------------------------------------------------

    async def handle(self, line: str) -> bool:
        """Handle one input line; False means quit."""
        if not line.startswith("/"):
            await self.ask(line)
            return True
        try:
            parts = shlex.split(line)
        except ValueError:
            parts = line.split()
        command, args = parts[0].lower(), parts[1:]
        try:
            if command in ("/quit", "/exit"):
                return False
            if command == "/help":
                self._print(HELP)
            elif command == "/new":
                self.thread = self._new_thread_id()
                self._status(f"New thread {self.thread}.")
            elif command == "/upload":
                await self.upload(" ".join(args))
            elif command == "/docs":
                await self.docs()
            elif command == "/forget":
                removed = await self.engine.delete_document(self.where, " ".join(args), self.user)
                self._status(f"Removed {' '.join(args)} ({removed} chunks).")
            elif command == "/llm-stats":
                self._print((await self.engine.stats(self.where)).render().replace("*", ""))
            elif command == "/llm-model":
                await self.model(args)
            elif command == "/llm-config":
                self._print(await self.engine.configure(self.where, self.user, line.split(maxsplit=1)[1]
                                                        if " " in line else ""))
            else:
                self._status(f"Unknown command {command}. /help lists them.")
        except ParleyError as exc:
            self._status(exc.render())
        return True

    async def ask(self, text: str) -> None:
        request = ChatRequest(where=self.where, user=self.user, text=text)
        streamed = False
        async for event in self.engine.answer(request):
            if isinstance(event, Queued) and self.interactive:
                self._status(f"(queued, {event.ahead} ahead)")
            elif isinstance(event, TextDelta) and self.interactive:
                self._print(event.text, end="")
                streamed = True
            elif isinstance(event, AnswerDone):
                if not self.interactive:
                    self._print(event.text)
                elif streamed:
                    self._print()
                if event.finish_reason == "cancelled":
                    self._status("(answer cancelled)")
                elif event.finish_reason == "length":
                    self._status("(answer cut at the length limit)")
                if event.sources:
                    self._print(format_sources(event.sources))
            elif isinstance(event, AnswerFailed):
                if streamed:
                    self._print()
                if not getattr(event, "silent", False):
                    self._status(event.render())

    async def upload(self, path_text: str) -> None:
        path = Path(path_text).expanduser()
        if not path_text or not path.is_file():
            self._status(f"No such file: {path_text or '(none given)'}")
            return
        data = await asyncio.to_thread(path.read_bytes)

        def progress(p: IngestProgress) -> None:
            if self.interactive:
                self.out.write(f"\r\x1b[2m{p.stage} {p.done}/{p.total} {p.unit}\x1b[0m\x1b[K")
                self.out.flush()

        result = await self.engine.ingest(
            FileUpload(where=self.where, user=self.user, filename=path.name, data=data), progress)
        if self.interactive:
            self.out.write("\r\x1b[K")
        if result.duplicate:
            self._status(f"{result.filename} is already here (version {result.version}); nothing changed.")
        else:
            pages = f"{result.pages} pages, " if result.pages else ""
            self._status(f"Indexed {result.filename} (version {result.version}): {pages}{result.chunks} chunks. Ask away.")

    async def docs(self) -> None:
        documents = await self.engine.list_documents(self.where)
        if not documents:
            self._status("No documents here yet. /upload PATH adds one.")
            return
        for d in documents:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.uploaded_at))
            self._print(f"{d.filename}  v{d.version}  {d.pages} pages  {d.chunks} chunks  {when}")

    async def model(self, args: list[str]) -> None:
        if not args:
            for m in self.engine.list_models():
                mark = "*" if m.live else " "
                self._print(f"{mark} {m.name}  ({m.source}, {m.device}, {m.dtype}, {m.context_window} tokens)"
                            + (f" — {m.description}" if m.description else ""))
            return
        self._status(f"Loading {args[0]}…")
        info = await self.engine.switch_model(args[0], self.where, self.user)
        self._status(f"Now answering with {info.name} ({info.device}, {info.dtype}).")


async def run_console(engine: Engine, stop: asyncio.Event, thread: str | None = None) -> None:
    await ConsoleAdapter(engine, thread=thread).run(stop)
