"""The Engine: the one platform-free object the adapters talk to.

Adapters hand it who/where/what as dataclasses (engine.types) and get back a stream of events;
it owns the live model backend, the sessions, the knowledge base and the stats. Blocking work
(model loading, tokenising, the session store, Chroma) runs off the event loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import AsyncIterator, Callable

from engine.runtime.backends import Backend, LocalBackend, load_local_model
from engine.answering import AnswerPipeline
from engine.channels import CONFIG_USAGE, ChannelSettings, ChannelSettingsStore, open_channel_settings, parse_config_command
from engine.config import Config, ModelConfig
from engine.runtime.cpu import embedding_threads, generation_threads
from engine.documents import DocumentCommands
from engine.errors import ErrorCode, ParleyError, reported
from engine.runtime.recovery import FaultRecovery
from engine.redis_sessions import open_session_store
from engine.sessions import SessionStore
from engine.stats import EngineStats
from engine.types import (
    AnswerEvent,
    AnswerFailed,
    ChatRequest,
    Conversation,
    EngineSnapshot,
    FileUpload,
    ModelInfo,
    StatsReport,
    User,
)


log = logging.getLogger(__name__)

ModelLoader = Callable[[ModelConfig], object]  # a LoadedModel or GGUFModel (engine/runtime/backends.py)
DRAIN_TIMEOUT_S = 20.0  # at stop, how long answers that just ended get to save themselves
# Failures that are faults (logged as errors); the others are refusals (warnings).
_FAULTS = {ErrorCode.GENERATION_FAILED, ErrorCode.MODEL_FAULT, ErrorCode.INTERNAL, ErrorCode.MODEL_LOAD_FAILED}


class Engine(DocumentCommands):
    """The one object the adapters talk to (its document commands: engine/documents.py)."""

    def __init__(self, config: Config, model_loader: ModelLoader = load_local_model):
        self.config = config
        self._model_loader = model_loader
        self._backend: Backend | None = None  # the live (default) model
        self._extra_backends: dict[str, Backend] = {}  # other models that channel settings asked for
        self._switch_lock = asyncio.Lock()
        self._state = "new"  # new -> ready -> stopping -> stopped
        self.sessions: SessionStore | None = None
        self.channels: ChannelSettingsStore | None = None
        self.feedback = None  # engine.feedback.FeedbackBook: 👍/👎 on answers, from start()
        self.knowledge = None  # engine.knowledge.KnowledgeBase when enabled
        self.stats_counters = EngineStats()
        self.limiter = None  # engine.limits.RateLimiter, from start()
        self.monitor = None  # engine.monitor.MemoryMonitor
        self.maintenance = None  # engine.maintenance.Maintenance
        self.metrics = None  # engine.metrics.MetricsServer when config.metrics.enabled
        self._answers = AnswerPipeline(self)
        self.recovery = FaultRecovery(self, config.scheduler.on_device_fault)
        self._in_flight = 0  # answer() iterators still open
        self._drained = asyncio.Event()
        self._drained.set()

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the stores and load the default model (in a worker thread)."""
        from engine.limits import RateLimiter

        data = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.limiter = RateLimiter.from_config(self.config.limits)
        self.sessions = await asyncio.to_thread(open_session_store, self.config)  # sqlite or redis
        self.channels = await asyncio.to_thread(open_channel_settings, self.config)  # sqlite or redis
        from engine.feedback import open_feedback

        self.feedback = await asyncio.to_thread(open_feedback, self.config)  # sqlite or redis

        async def open_knowledge() -> None:
            if self.config.knowledge.enabled:
                from engine.knowledge import KnowledgeBase

                self.knowledge = await asyncio.to_thread(KnowledgeBase, self.config.knowledge, data,
                                                         load_embedder=False)
                # An ingest embeds on every core while nothing is generating, on its share while something is.
                self.knowledge.generation_busy = lambda: self._in_flight > 0

        # Chroma opens while the model loads; the embedder loads after the model (two threads
        # importing transformers at once break its lazy imports) and while the first answers run.
        _, self._backend = await asyncio.gather(
            open_knowledge(), self._create_backend(self.config.model(self.config.default_model)))
        if self.knowledge is not None:
            self.knowledge.load_embedder_in_background()
        await self._start_operations()
        self._state = "ready"
        log.info("engine ready", extra={"model": self.config.default_model})

    async def stop(self, *, cancel: bool = True) -> None:
        """Stop taking work, end (cancel=True) or finish in-flight answers, flush the stores."""
        if self._state in ("stopping", "stopped"):
            return  # bot.py stops the engine on a signal, and again on its way out
        self._state = "stopping"
        await self.recovery.close()
        if self.maintenance is not None:
            await self.maintenance.stop()
        backends = [b for b in (self._backend, *self._extra_backends.values()) if b is not None]
        self._backend, self._extra_backends = None, {}
        await asyncio.gather(*(b.shutdown(cancel=cancel) for b in backends))
        # Answers that just ended (cancelled ones too) still save their text: let them, then close.
        try:
            await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("answers still open at stop", extra={"count": self._in_flight})
        if self.metrics is not None:
            await self.metrics.stop()
        if self.limiter is not None:
            await self.limiter.close()
        if self.knowledge is not None:
            await asyncio.to_thread(self.knowledge.close)
        if self.sessions is not None:
            await asyncio.to_thread(self.sessions.close)
        if self.channels is not None:
            await asyncio.to_thread(self.channels.close)
        if self.feedback is not None:
            await self.feedback.close()
        self._state = "stopped"
        log.info("engine stopped")

    async def _start_operations(self) -> None:
        """The memory monitor, maintenance tasks and (when enabled) the metrics endpoint."""
        from engine.maintenance import Maintenance
        from engine.monitor import MemoryMonitor

        self.monitor = MemoryMonitor(self.config.maintenance, self._live_backends)
        self.maintenance = Maintenance(self)
        self.maintenance.start()
        if self.config.metrics.enabled:
            from engine.metrics import MetricsServer

            self.metrics = MetricsServer(self, self.config.metrics)
            await self.metrics.start()

    @property
    def state(self) -> str:
        """new -> ready -> stopping -> stopped"""
        return self._state

    def snapshot(self) -> EngineSnapshot:
        """What stats, metrics and health read: the state, the live model and its scheduler, memory."""
        backend, monitor = self._backend, self.monitor
        return EngineSnapshot(state=self._state, model_name=self.live_model,
                              model=backend.describe() if backend else {},
                              scheduler=backend.scheduler_snapshot() if backend else {},
                              pressure=monitor.snapshot() if monitor is not None else {},
                              overloaded=bool(monitor is not None and monitor.overloaded))

    def _live_backends(self) -> list[Backend]:
        return [b for b in (self._backend, *self._extra_backends.values()) if b is not None]

    async def admit(self, where: Conversation, user: User, action: str) -> None:
        """Before any work: refuse it while memory is short (OVERLOADED) or past a rate limit."""
        if self.monitor is not None:
            self.monitor.admit()
        if self.limiter is None or (self.config.limits.admins_exempt and self.is_admin(where, user)):
            return
        if action == "ingest":
            await self.limiter.check_ingest(where, user)
        else:
            await self.limiter.check_answer(where, user)

    async def _create_backend(self, cfg: ModelConfig) -> Backend:
        if cfg.source == "openai_compatible":
            from engine.runtime.remote import RemoteBackend

            return await asyncio.to_thread(RemoteBackend, cfg)  # may load a local tokenizer
        loaded = await asyncio.to_thread(self._model_loader, cfg)
        if loaded.config is not cfg:  # a shared or cached model serves under this entry's name and settings
            loaded = dataclasses.replace(loaded, config=cfg)
        knowledge = self.config.knowledge
        embed_threads = embedding_threads(knowledge.embed_threads) if knowledge.enabled else 0
        threads = generation_threads(self.config.scheduler.cpu_threads, embed_threads)
        return LocalBackend(loaded, dataclasses.replace(self.config.scheduler, cpu_threads=threads),
                            on_fault=self.recovery.on_fault)

    async def replace_backend(self, broken: Backend) -> None:
        """Load `broken`'s model again and serve it under the same name (after a device fault)."""
        async with self._switch_lock:
            if self.is_retired(broken):
                return
            fresh = await self._create_backend(broken.config)
            if self._backend is broken:
                self._backend = fresh
            else:
                self._extra_backends = {n: fresh if b is broken else b for n, b in self._extra_backends.items()}
        await broken.shutdown(cancel=True)

    @property
    def live_model(self) -> str | None:
        return self._backend.config.name if self._backend else None

    async def backend_for(self, name: str) -> Backend:
        """The backend for model `name`: the live one, or another loaded on first use by a channel."""
        backend = self._backend
        if backend is None:
            raise ParleyError(ErrorCode.MODEL_NOT_READY)
        if name == backend.config.name or self.config.model(name) is None:
            return backend
        if name not in self._extra_backends:
            async with self._switch_lock:
                if name not in self._extra_backends and name != self.live_model:
                    log.info("loading model for a channel", extra={"model": name})
                    self._extra_backends[name] = await self._create_backend(self.config.model(name))
            if name == self.live_model:
                return self._backend
        return self._extra_backends[name]

    def is_retired(self, backend: Backend) -> bool:
        return backend is not self._backend and backend not in self._extra_backends.values()

    # ---- answering ---------------------------------------------------------------------------

    async def answer(self, request: ChatRequest) -> AsyncIterator[AnswerEvent]:
        """Stream the answer to `request`: Queued*, TextDelta*, then AnswerDone or AnswerFailed.

        Closing the iterator early cancels the generation.
        """
        self._in_flight += 1  # stop() waits for open answers to save themselves
        self._drained.clear()
        try:
            async with contextlib.aclosing(self._answers.run(request)) as events:
                async for event in events:
                    yield event
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._drained.set()

    def failure(self, exc: ParleyError, request: ChatRequest | None = None,
                 cause: BaseException | None = None, *, action: str = "answer", args: tuple = ()) -> AnswerFailed:
        """Count and log a failure once, with the reference the user sees."""
        if exc.code is ErrorCode.RATE_LIMITED:
            self.stats_counters.record_rate_limited(getattr(exc, "limit", "user"))
        else:
            self.stats_counters.record_error(exc.code.value)
        extra = {"code": exc.code.value, "ref": exc.reference, "action": action}
        if exc.detail:
            extra["detail"] = exc.detail
        for arg in (request, *args):  # who and where, from whatever the call was given
            if isinstance(arg, (ChatRequest, FileUpload)):
                extra.update(session=arg.where.session_key, user=arg.user.id)
            elif isinstance(arg, Conversation):
                extra["session"] = arg.session_key
            elif isinstance(arg, User):
                extra["user"] = arg.id
        if cause is not None:
            log.error("request failed: %s", exc.user_message, extra=extra, exc_info=cause)
        elif exc.silent:
            log.debug("request refused again in its cool-down", extra=extra)  # a flood: one line is enough
        elif exc.code in _FAULTS:
            log.error("request failed: %s", exc.user_message, extra=extra)
        else:
            log.warning("request refused: %s", exc.user_message, extra=extra)
        return AnswerFailed(code=exc.code, message=exc.user_message, reference=exc.reference, silent=exc.silent)

    # ---- admin -------------------------------------------------------------------------------

    def is_admin(self, where: Conversation, user: User) -> bool:
        """Platform admins (Slack admins/owners, Discord Manage Server) and the config allowlist."""
        if user.platform_admin:
            return True
        by_workspace = self.config.admins.get(where.platform, {})
        allowed = set(by_workspace.get(where.workspace, [])) | set(by_workspace.get("*", []))
        return user.id in allowed or any(f"role:{r}" in allowed for r in user.roles)

    def list_models(self) -> list[ModelInfo]:
        live = self.live_model
        described = self._backend.describe() if self._backend else {}
        infos = []
        for m in self.config.models:
            is_live = m.name == live
            infos.append(ModelInfo(
                name=m.name, source=m.source, live=is_live, description=m.description,
                context_window=m.context_window,
                device=described.get("device", "") if is_live else m.device,
                dtype=described.get("dtype", "") if is_live else m.dtype))
        return infos

    @reported("switch_model")
    async def switch_model(self, name: str, where: Conversation, user: User) -> ModelInfo:
        """Load `name`, route new requests to it, let the old model finish its answers, free it."""
        if not self.is_admin(where, user):
            raise ParleyError(ErrorCode.FORBIDDEN, "Only admins can switch the model.")
        cfg = self.config.model(name)
        if cfg is None:
            names = ", ".join(m.name for m in self.config.models)
            raise ParleyError(ErrorCode.MODEL_UNKNOWN, f"There is no model named {name!r}. Models: {names}.")
        async with self._switch_lock:
            if self.live_model != name:
                log.info("switching model", extra={"from": self.live_model, "to": name, "by": user.id})
                # Loading takes a while; the old model keeps answering meanwhile.
                new_backend = self._extra_backends.pop(name, None) or await self._create_backend(cfg)
                old, self._backend = self._backend, new_backend
                if old is not None:
                    await old.shutdown(cancel=False)  # in-flight answers finish on the old model
                log.info("model switched", extra={"model": name})
        return next(m for m in self.list_models() if m.name == name)

    async def channel_settings(self, where: Conversation) -> ChannelSettings:
        """The effective settings of `where`'s channel, with where each one comes from."""
        return await asyncio.to_thread(self.channels.effective, where, self.live_model)

    @reported("configure")
    async def configure(self, where: Conversation, user: User, text: str) -> str:
        """`/llm-config [workspace] [KEY VALUE | reset [KEY] | help]`: returns the reply to show.

        Everyone may view; only admins may set. New threads pick up changes; running ones keep theirs.
        """
        command = parse_config_command(text)
        if command.action == "help":
            return CONFIG_USAGE
        if command.action != "show":
            if not self.is_admin(where, user):
                raise ParleyError(ErrorCode.FORBIDDEN, "Only admins can change channel settings; anyone can view them.")
            if command.action == "set":
                await asyncio.to_thread(self.channels.set, where, command.level, command.key, command.value)
            else:
                await asyncio.to_thread(self.channels.reset, where, command.level, command.key)
            log.info("channel settings changed", extra={
                "scope": f"{where.platform}/{where.workspace}" + ("" if command.level == "workspace" else f"/{where.channel}"),
                "action": command.action, "key": command.key, "by": user.id})
        settings = await self.channel_settings(where)
        head = "Settings for this channel" + (" (new threads use them)" if command.action != "show" else "")
        return "\n".join([head + ":", *settings.render()])

    @reported("stats")
    async def stats(self, where: Conversation | None = None) -> StatsReport:
        from engine.report import build_stats_report

        return await build_stats_report(self, where)

    @reported("stats")
    async def summary(self, where: Conversation, user: User) -> StatsReport:
        """What anyone may see of the figures: the live model, the queue, their own usage and limits."""
        from engine.report import build_user_summary

        return await build_user_summary(self, where, user)
