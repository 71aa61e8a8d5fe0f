"""The Engine: the one platform-free object the adapters talk to.

Adapters hand it who/where/what as dataclasses (engine.types) and get back a stream of events.
The Engine opens the stores, wires the parts that do the work and keeps the lifecycle; each
command is one delegation: the model lineup (engine/lineup.py), who may do what and its audit
trail (authority.py, audit.py), admission (admission.py),
answering (answering.py), documents (documents.py), summaries (summaries.py), channel settings
(channel_commands.py), reports (report.py), fault recovery (runtime/recovery.py). Blocking work
(model loading, tokenising, the session store, Chroma) runs off the event loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from typing import TYPE_CHECKING, AsyncContextManager, AsyncIterator, Iterator, Sequence

from engine.access import AccessPolicy
from engine.admission import Admission, Resolve
from engine.audit import AuditEntry, AuditLog, open_audit
from engine.authority import Authority, Role
from engine.answering import AnswerPipeline, Budgets
from engine.channel_commands import ChannelCommands
from engine.channels import ChannelSettings, ChannelSettingsStore, open_channel_settings
from engine.completions import Completions
from engine.config import Config
from engine.documents import DocumentCommands, shared_cancels
from engine.errors import ErrorCode, ParleyError, reported
from engine.feedback import FeedbackBook, FeedbackComment, open_feedback
from engine.lineup import ModelLineup
from engine.redis_sessions import open_session_store
from engine.report import Reports
from engine.runtime.backends import Backend, ModelLoader, load_local_model
from engine.runtime.recovery import FaultRecovery
from engine.sessions import SessionStore
from engine.stats import EngineStats
from engine.summaries import Summaries, SummaryRun
from engine.types import (AnswerEvent, AnswerFailed, ChatRequest, Conversation, DocumentInfo, EngineSnapshot,
                          FileUpload, IngestResult, ModelInfo, ProgressCallback, SaidMessage, StatsReport, Summary,
                          SummaryProgress, User)

if TYPE_CHECKING:
    from engine.knowledge import KnowledgeBase
    from engine.limits import RateLimiter
    from engine.maintenance import Maintenance
    from engine.metrics import MetricsServer
    from engine.monitor import MemoryMonitor

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 20.0  # at stop, how long answers that just ended get to save themselves
INGEST_STOP_TIMEOUT_S = 20.0  # at stop, how long cancelled ingests get to undo their writes


@dataclasses.dataclass(frozen=True)
class _Parts:
    """The parts that work on the stores, wired once start() has opened them."""

    answers: AnswerPipeline
    documents: DocumentCommands
    summaries: Summaries
    channels: ChannelCommands
    reports: Reports


class Engine:
    """The one object the adapters talk to."""

    def __init__(self, config: Config, model_loader: ModelLoader = load_local_model):
        self.config = config
        self._state = "new"  # new -> ready -> stopping -> stopped
        self.stats_counters = EngineStats()
        # Who is who and may do what (engine/authority.py): every command below that governs asks it.
        self.authority = Authority(config.admins, config.operators, config.limits.exempt)
        self.admission = Admission(self.authority, config.limits, self.stats_counters)
        # Who may use Parley where (config.access, DMs, `reply off`): every entry point asks it.
        self.access = AccessPolicy(config.access, is_admin=self.is_admin, settings=self.channel_settings)
        self.lineup = ModelLineup(config, model_loader, on_fault=self._on_fault)
        self.recovery = FaultRecovery(self.lineup, config.scheduler.on_device_fault, state=self._read_state)
        self.sessions: SessionStore | None = None
        self.channels: ChannelSettingsStore | None = None
        self.feedback: FeedbackBook | None = None  # 👍/👎 on answers
        self.audit: AuditLog | None = None  # admins' and operators' acts, and refusals
        self.knowledge: KnowledgeBase | None = None  # when config.knowledge.enabled
        self.maintenance: Maintenance | None = None
        self.metrics: MetricsServer | None = None  # when config.metrics.enabled
        self._parts: _Parts | None = None
        self._in_flight = 0  # answers and summaries still running (stop() drains them)
        self._drained = asyncio.Event()
        self._drained.set()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the stores and load the default model (in a worker thread)."""
        config = self.config
        config.data_path.mkdir(parents=True, exist_ok=True)
        self.admission.start(config)  # rate limits, and the stats summed in redis
        self.sessions = await asyncio.to_thread(open_session_store, config)  # sqlite or redis
        self.channels = await asyncio.to_thread(open_channel_settings, config)  # sqlite or redis
        self.feedback = await asyncio.to_thread(open_feedback, config)  # sqlite or redis
        self.audit = await asyncio.to_thread(open_audit, config)  # sqlite or redis
        self.authority.keep_audit(self.audit)
        # Chroma opens while the model loads; the embedder loads after the model (two threads
        # importing transformers at once break its lazy imports) and while the first answers run.
        await asyncio.gather(self._open_knowledge(), self.lineup.load_live())
        if self.knowledge is not None:
            self.knowledge.load_embedder_in_background()
        self._parts = self._wire(self.sessions, self.channels)
        await self._start_operations()
        self._state = "ready"
        log.info("engine ready", extra={"model": config.default_model})

    async def _open_knowledge(self) -> None:
        if not self.config.knowledge.enabled:
            return
        from engine.knowledge import KnowledgeBase

        self.knowledge = await asyncio.to_thread(KnowledgeBase, self.config.knowledge, self.config.data_path,
                                                 load_embedder=False)
        # An ingest embeds on every core while nothing is generating, on its share while something is.
        self.knowledge.generation_busy = lambda: self._in_flight > 0

    def _wire(self, sessions: SessionStore, channel_store: ChannelSettingsStore) -> _Parts:
        """Each part gets the collaborators it uses, never the Engine."""
        config = self.config
        channels = ChannelCommands(channel_store, self.authority, lambda: self.lineup.live_model)
        answers = AnswerPipeline(
            sessions=sessions, settings=channels.settings, lineup=self.lineup, knowledge=self.knowledge,
            admission=self.admission, stats=self.stats_counters, state=self._read_state,
            budgets=Budgets(config.sessions.history_tokens, config.knowledge.context_tokens))
        reports = Reports(stats=self.stats_counters, limits=config.limits, authority=self.authority,
                          snapshot=self.snapshot, sessions=sessions, knowledge=self.knowledge,
                          feedback=self.feedback, channel_settings=channels.settings)
        return _Parts(answers=answers,
                      documents=DocumentCommands(self.knowledge, self.admission, self.stats_counters,
                                                 authority=self.authority, cancels=shared_cancels(config)),
                      summaries=Summaries(lineup=self.lineup, settings=channels.settings,
                                          admission=self.admission, state=self._read_state),
                      channels=channels, reports=reports)

    async def _start_operations(self) -> None:
        """The memory monitor, maintenance tasks and (when enabled) the metrics endpoint."""
        from engine.maintenance import Maintenance, open_leader
        from engine.monitor import MemoryMonitor

        monitor = MemoryMonitor(self.config.maintenance, self.lineup.backends)
        self.admission.watch(monitor)
        self.maintenance = Maintenance(self.config.maintenance, monitor=monitor, sessions=self.sessions,
                                       knowledge=self.knowledge, leader=open_leader(self.config),
                                       idle_expiry_hours=self.config.sessions.idle_expiry_hours)
        self.maintenance.start()
        if self.config.metrics.enabled:
            from engine.metrics import MetricsServer

            self.metrics = MetricsServer(self.config.metrics, functools.partial(self.stats, None), self.snapshot)
            await self.metrics.start()

    async def stop(self, *, cancel: bool = True) -> None:
        """Stop taking work, end (cancel=True) or finish in-flight answers, flush the stores."""
        if self._state in ("stopping", "stopped"):
            return  # bot.py stops the engine on a signal, and again on its way out
        self._state = "stopping"
        # Ingests are cancelled whatever `cancel` says (a large one takes minutes): each running one
        # undoes its writes, each tells its sharer; they end while the answers drain.
        ingests = asyncio.create_task(self._stop_ingests())
        await self.recovery.close()
        if self.maintenance is not None:
            await self.maintenance.stop()
        await self.lineup.shutdown(cancel=cancel)
        # Answers and summaries that just ended (cancelled ones too) still save or show their text:
        # let them, then close.
        try:
            await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("answers still open at stop", extra={"count": self._in_flight})
        await ingests
        if self.metrics is not None:
            await self.metrics.stop()
        await self.admission.close()
        await self._close_stores()
        self._state = "stopped"
        log.info("engine stopped")

    async def _stop_ingests(self) -> None:
        if self.knowledge is not None:
            left = await self.knowledge.stop_ingests(INGEST_STOP_TIMEOUT_S)
            if left:
                log.warning("ingests still running at stop", extra={"count": left})

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """Count work in flight (an answer, a summary): stop() waits for it, and an ingest leaves
        the cores to generation while there is any."""
        self._in_flight += 1
        self._drained.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._drained.set()

    async def _close_stores(self) -> None:
        for store in (self.knowledge, self.sessions, self.channels):
            if store is not None:
                await asyncio.to_thread(store.close)
        if self.feedback is not None:
            await self.feedback.close()
        if self.audit is not None:
            await self.audit.close()

    def _on_fault(self, backend: Backend, reference: str) -> None:
        self.recovery.on_fault(backend, reference)  # the lineup is built before recovery, which uses it

    def _read_state(self) -> str:
        return self._state  # the parts read it at each use: they refuse work unless ready

    def _ready_parts(self) -> _Parts:
        if self._parts is None:
            raise ParleyError(ErrorCode.MODEL_NOT_READY)
        return self._parts

    @property
    def state(self) -> str:
        """new -> ready -> stopping -> stopped"""
        return self._state

    @property
    def limiter(self) -> RateLimiter | None:
        return self.admission.limiter

    @property
    def monitor(self) -> MemoryMonitor | None:
        return self.admission.monitor

    def snapshot(self) -> EngineSnapshot:
        """What stats, metrics and health read: the state, the live model and its scheduler, memory."""
        monitor = self.admission.monitor
        return EngineSnapshot(state=self._state, model_name=self.lineup.live_model,
                              model=self.lineup.describe(), scheduler=self.lineup.scheduler_snapshot(),
                              pressure=monitor.snapshot() if monitor is not None else {},
                              overloaded=bool(monitor is not None and monitor.overloaded))

    # ---- answering ---------------------------------------------------------------------------

    async def answer(self, request: ChatRequest) -> AsyncIterator[AnswerEvent]:
        """Stream the answer to `request`: Queued*, TextDelta*, then AnswerDone or AnswerFailed.

        Closing the iterator early cancels the generation.
        """
        if self._parts is None:
            yield self.failure(ParleyError(ErrorCode.MODEL_NOT_READY), request)
            return
        with self._working():  # stop() waits for open answers to save themselves
            async with contextlib.aclosing(self._parts.answers.run(request)) as events:
                async for event in events:
                    yield event

    @reported("admission")
    async def precheck(self, where: Conversation, user: User, action: str = "answer",
                       resolve: Resolve | None = None) -> User:
        """Admission before an adapter spends anything on a request (its asker's profile, a thread's
        history, a download): the unit is taken now, and the engine's own check takes no other."""
        if self._state != "ready":  # nothing to spend anything for
            raise ParleyError(ErrorCode.MODEL_NOT_READY if self._state == "new" else ErrorCode.SHUTTING_DOWN)
        return await self.admission.precheck(where, user, action, resolve)

    def failure(self, exc: ParleyError, request: ChatRequest | None = None,
                cause: BaseException | None = None, *, action: str = "answer", args: tuple = ()) -> AnswerFailed:
        """Count and log a failure once, with the reference the user sees (engine/admission.py)."""
        return self.admission.failure(exc, request, cause, action=action, args=args)

    @functools.cached_property
    def api(self) -> Completions:
        """OpenAI-style completions and embeddings, for the HTTP API (engine/completions.py)."""
        return Completions(lineup=self.lineup, admission=self.admission, authority=self.authority,
                           stats=self.stats_counters, knowledge=lambda: self.knowledge, state=self._read_state,
                           context_tokens=self.config.knowledge.context_tokens)

    # ---- models and admins -------------------------------------------------------------------

    @property
    def live_model(self) -> str | None:
        return self.lineup.live_model

    def is_admin(self, where: Conversation, user: User) -> bool:
        """Whether `user` governs `where`'s workspace: its admins, and operators (engine/authority.py)."""
        return self.authority.role_of(where, user) >= Role.WORKSPACE_ADMIN

    def allows(self, act: str, where: Conversation, user: User, owner: str | None = None) -> bool:
        """Whether `user` may do `act` (a name of engine.authority.ACTS) here: for what to show."""
        return self.authority.allows(act, where, user, owner)

    def list_models(self) -> list[ModelInfo]:
        return self.lineup.list_models()

    @reported("switch_model")
    async def switch_model(self, name: str, where: Conversation, user: User) -> ModelInfo:
        """Load `name`, route new requests to it, let the old model finish its answers, free it:
        operators only (it answers every workspace)."""
        async with self.authority.acting("switch_model", where, user, target=name):
            await self.lineup.switch(name, by=user.id)
        return self.lineup.info(name)

    # ---- channel settings and figures --------------------------------------------------------

    async def channel_settings(self, where: Conversation) -> ChannelSettings:
        """The effective settings of `where`'s channel, with where each one comes from."""
        return await self._ready_parts().channels.settings(where)

    @reported("configure")
    async def configure(self, where: Conversation, user: User, text: str) -> str:
        """`/llm-config [workspace] [KEY VALUE | reset [KEY] | help]`: returns the reply to show."""
        return await self._ready_parts().channels.configure(where, user, text)

    @reported("stats")
    async def stats(self, where: Conversation | None = None) -> StatsReport:
        """Every figure of the process: for its own use (metrics, tests). Chat reaches the figures
        through `report`, which asks who is asking."""
        return await self._ready_parts().reports.stats(where)

    @reported("stats")
    async def report(self, where: Conversation, user: User) -> StatsReport:
        """/llm-stats: every figure for an operator, the workspace's for its admins, else `summary`."""
        return await self._ready_parts().reports.report(where, user)

    @reported("stats")
    async def summary(self, where: Conversation, user: User) -> StatsReport:
        """What anyone may see of the figures: the live model, the queue, their own usage and limits."""
        return await self._ready_parts().reports.summary(where, user)

    # ---- documents and summaries -------------------------------------------------------------

    @reported("ingest")
    async def ingest(self, upload: FileUpload, progress: ProgressCallback | None = None) -> IngestResult:
        return await self._ready_parts().documents.ingest(upload, progress)

    @reported("cancel_ingest")
    async def cancel_ingest(self, where: Conversation, name: str, user: User) -> bool:
        """Stop the ingest of file `name` in this channel (its sharer or an admin); False when none runs."""
        return await self._ready_parts().documents.cancel_ingest(where, name, user)

    @reported("list_documents")
    async def list_documents(self, where: Conversation, workspace_wide: bool | None = None) -> list[DocumentInfo]:
        """The documents of `where`'s channel (or of its workspace: `workspace_wide`, else the config's default)."""
        return await self._ready_parts().documents.list_documents(where, workspace_wide)

    @reported("list_documents")
    async def workspace_documents(self, where: Conversation) -> list[DocumentInfo]:
        """Every document of `where`'s workspace, whatever its channel (the Slack Home tab)."""
        return await self._ready_parts().documents.workspace_documents(where)

    @reported("channel_changed")
    async def channel_changed(self, where: Conversation) -> int:
        """A channel made private or public (the platform's event): its documents follow at once."""
        return await self._ready_parts().documents.channel_changed(where)

    @reported("delete_document")
    async def delete_document(self, where: Conversation, name: str, user: User) -> int:
        """Forget a document of this scope: its uploader or an admin may."""
        return await self._ready_parts().documents.delete_document(where, name, user)

    def summarizing(self, where: Conversation, user: User, resolve: Resolve | None = None
                    ) -> AsyncContextManager[SummaryRun]:
        """A summary admitted before anything is read (rate limits, a summary call left, one per
        asker at a time: engine/summaries.py): `async with` it, read, then summarize(run=...)."""
        return self._ready_parts().summaries.summarizing(where, user, resolve)

    @reported("summarize")
    async def summarize(self, where: Conversation, user: User, messages: Sequence[SaidMessage],
                        progress: SummaryProgress | None = None, *, run: SummaryRun | None = None) -> Summary:
        """A short list of points from `messages`, oldest first, naming who said them (engine/summaries.py).
        Work in flight like an answer: stop() waits for it (cancelled, it says Parley is restarting)."""
        parts = self._ready_parts()
        with self._working():
            return await parts.summaries.summarize(where, user, messages, progress, run)

    # ---- oversight ---------------------------------------------------------------------------

    @reported("view_audit")
    async def audit_entries(self, where: Conversation, user: User, limit: int = 20) -> list[AuditEntry]:
        """The newest audit entries: of `where`'s workspace for its admins, of every one for operators."""
        return await self.authority.entries(where, user, limit)

    @reported("view_audit")
    async def feedback_comments(self, where: Conversation, user: User, limit: int = 20) -> list[FeedbackComment]:
        """The newest 👎 comments: on `where`'s workspace's answers for its admins, every one for operators."""
        return await self._ready_parts().reports.comments(where, user, limit)
