"""The model lineup: the live (default) model and the others that channel settings asked for.

It creates a backend for a configured model (a local one on the batching scheduler, or a remote
server), looks one up by name (loading it on first use), switches the live model, replaces a
backend after a device fault, and shuts them all down. One lock serialises the loads, so two
channels asking for the same model load it once.

The live model's choice is kept (engine/live_model.py): a restart loads the model switched to
last, not the config's default; with Redis every replica polls the shared choice and follows a
switch made on any of them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging

from engine.config import Config, ModelConfig
from engine.errors import ErrorCode, ParleyError
from engine.live_model import POLL_S, LiveChoice, open_live_choice
from engine.runtime.backends import Backend, FaultHandler, ModelLoader, open_backend
from engine.runtime.cpu import embedding_threads, generation_threads
from engine.types import ModelInfo

log = logging.getLogger(__name__)


class ModelLineup:
    """The backends serving the configured models: one live, others loaded on first use."""

    def __init__(self, config: Config, loader: ModelLoader, on_fault: FaultHandler):
        """`on_fault(backend, reference)` runs on the event loop once a device fault has stopped a
        local model (engine/runtime/recovery.py decides what then)."""
        self._config = config
        self._loader = loader
        self._on_fault = on_fault
        self._live: Backend | None = None
        self._extra: dict[str, Backend] = {}  # other models that channel settings asked for
        self._lock = asyncio.Lock()
        self._choice: LiveChoice | None = None  # where the choice is kept, once load_live opened it
        self._follower: asyncio.Task | None = None  # polls a shared choice
        self._seen: str | None = None  # the stored choice as this process last saw (or wrote) it
        self._switches = 0  # bumped as a switch here begins and once it is recorded

    @property
    def live(self) -> Backend | None:
        """The live (default) model's backend; None before the first load and after shutdown."""
        return self._live

    @property
    def live_model(self) -> str | None:
        return self._live.config.name if self._live else None

    def backends(self) -> list[Backend]:
        """Every loaded backend, the live one first."""
        return [b for b in (self._live, *self._extra.values()) if b is not None]

    async def create(self, cfg: ModelConfig) -> Backend:
        """A new backend for `cfg`: a remote server's client, or a local model loaded in a worker thread
        on the cores that embedding leaves it."""
        knowledge = self._config.knowledge
        embed_threads = embedding_threads(knowledge.embed_threads) if knowledge.enabled else 0
        threads = generation_threads(self._config.scheduler.cpu_threads, embed_threads)
        scheduler = dataclasses.replace(self._config.scheduler, cpu_threads=threads)
        return await open_backend(cfg, scheduler, loader=self._loader, on_fault=self._on_fault)

    async def load_live(self) -> None:
        """Load the live model: the one switched to last (kept across restarts, shared by replicas
        with Redis), or the config's default (also when the chosen one fails to load); then follow
        a shared choice."""
        self._choice = await asyncio.to_thread(open_live_choice, self._config)
        chosen = await asyncio.to_thread(self._choice.read)
        self._seen = chosen
        default = self._config.default_model
        if chosen and chosen != default and self._config.model(chosen) is not None:
            try:
                self._live = await self.create(self._config.model(chosen))
            except Exception:  # noqa: BLE001 - a broken choice must not keep the bot down
                log.error("the stored live model failed to load: the default serves", extra={"model": chosen},
                          exc_info=True)
        if self._live is None:
            self._live = await self.create(self._config.model(default))
        if self._choice.shared:
            self._follower = asyncio.create_task(self._follow(), name="follow-live-model")

    async def _follow(self) -> None:
        """Switch to the model another replica chose (polled every POLL_S): only a change of the
        shared choice is followed, so a switch here is never undone before it is recorded."""
        unreachable = False
        while True:
            await asyncio.sleep(POLL_S)
            switches = self._switches
            try:
                name = await asyncio.to_thread(self._choice.read)
            except Exception:  # noqa: BLE001 - Redis away: this replica keeps its model; said once
                if not unreachable:
                    log.warning("the shared live model cannot be read", exc_info=True)
                unreachable = True
                continue
            unreachable = False
            if name == self._seen or switches != self._switches:
                continue
            self._seen = name
            if name is not None and name != self.live_model and self._config.model(name) is not None:
                try:
                    await self._switch_to(name, by="another replica")
                except Exception:  # noqa: BLE001 - keep following; this choice is not tried again until it changes
                    log.error("could not follow the shared live model", extra={"model": name}, exc_info=True)

    async def backend_for(self, name: str) -> Backend:
        """The backend for model `name`: the live one, or another loaded on first use by a channel."""
        backend = self._live
        if backend is None:
            raise ParleyError(ErrorCode.MODEL_NOT_READY)
        if name == backend.config.name or self._config.model(name) is None:
            return backend
        if name not in self._extra:
            async with self._lock:
                if name not in self._extra and name != self.live_model:
                    log.info("loading model for a channel", extra={"model": name})
                    self._extra[name] = await self.create(self._config.model(name))
            if name == self.live_model:
                return self._live
        return self._extra[name]

    def check_name(self, name: str) -> ModelConfig:
        """The configured model `name`; MODEL_UNKNOWN, naming the models, when there is none."""
        cfg = self._config.model(name)
        if cfg is None:
            names = ", ".join(m.name for m in self._config.models)
            raise ParleyError(ErrorCode.MODEL_UNKNOWN, f"There is no model named {name!r}. Models: {names}.")
        return cfg

    async def switch(self, name: str, *, by: str = "") -> None:
        """Make `name` the live model: load it (the old one keeps answering meanwhile), route new
        requests to it, and let the old one finish its answers before it is freed."""
        self._switches += 1  # a read the follower began before this is stale
        await self._switch_to(name, by=by)
        if self._choice is not None:  # recorded once it serves: a model that fails to load is not kept
            self._seen = name
            await asyncio.to_thread(self._choice.write, name, by)
            self._switches += 1

    async def _switch_to(self, name: str, *, by: str) -> None:
        cfg = self.check_name(name)
        async with self._lock:
            if self.live_model == name:
                return
            log.info("switching model", extra={"from": self.live_model, "to": name, "by": by})
            fresh = self._extra.pop(name, None) or await self.create(cfg)
            old = self._live
            self._live = fresh
            if old is not None:
                await old.shutdown(cancel=False)  # in-flight answers finish on the old model
            log.info("model switched", extra={"model": name})

    async def replace(self, broken: Backend) -> None:
        """Load `broken`'s model again and serve it under the same name (after a device fault)."""
        async with self._lock:
            if self.is_retired(broken):
                return
            fresh = await self.create(broken.config)
            if self._live is broken:
                self._live = fresh
            else:
                self._extra = {n: fresh if b is broken else b for n, b in self._extra.items()}
        await broken.shutdown(cancel=True)

    def is_retired(self, backend: Backend) -> bool:
        """Whether `backend` no longer serves (switched away from, replaced, or shut down)."""
        return backend is not self._live and backend not in self._extra.values()

    def describe(self) -> dict:
        """The live model's description (device, dtype, parameters...); {} when none is loaded."""
        return self._live.describe() if self._live else {}

    def scheduler_snapshot(self) -> dict:
        """The live model's scheduler figures; {} when none is loaded."""
        return self._live.scheduler_snapshot() if self._live else {}

    def list_models(self) -> list[ModelInfo]:
        """Every configured model; the live one with the device and dtype it really runs on."""
        live = self.live_model
        described = self.describe()
        infos = []
        for m in self._config.models:
            is_live = m.name == live
            infos.append(ModelInfo(
                name=m.name, source=m.source, live=is_live, description=m.description,
                context_window=m.context_window,
                device=described.get("device", "") if is_live else m.device,
                dtype=described.get("dtype", "") if is_live else m.dtype))
        return infos

    def info(self, name: str) -> ModelInfo:
        return next(m for m in self.list_models() if m.name == name)

    async def shutdown(self, *, cancel: bool) -> None:
        """Shut every backend down (cancel=False lets their answers finish) and forget them."""
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None
        if self._choice is not None:
            await asyncio.to_thread(self._choice.close)
            self._choice = None
        backends = self.backends()
        self._live = None
        self._extra = {}
        await asyncio.gather(*(b.shutdown(cancel=cancel) for b in backends))
