"""Continuous-batching generation: one worker thread owns the model and serves every request at once.

The scheduler plans, an executor runs (the split of vLLM v1). Each loop of the worker plans a
round (engine/runtime/round_plan.py: which waiting requests start, within max_batch,
max_tokens_in_flight and the prompt tokens the measured prefill rate computes in
prefill_round_ms), has the executor prefill the newcomers, which join the running batch, and
compute a slice of one longer prompt ahead, then runs one decode step that advances every running
request by one token. A request leaves at a stop token, its max_new_tokens, or a cancel; the
others never notice.
Executors: engine/runtime/torch_executor.py (transformers; CUDA and CPU), engine/runtime/llama_executor.py
(a GGUF on its quantised weights; CPU). Sampling is the scheduler's: the executor hands back
next-token logits, and every row's settings apply to the whole batch at once (sampling.py).
Events cross to the event loop through each request's GenerationHandle (generation.py).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable

import torch

from engine.config import SchedulerConfig
from engine.runtime.cpu import cpu_count, use_threads
from engine.runtime.detokenize import IncrementalDetokenizer
from engine.errors import ErrorCode, ParleyError, new_reference
from engine.runtime.executor import DeviceFailure, Executor, LocalModel, is_device_fault
from engine.runtime.generation import GenerationHandle, GenFinished, GenQueued, GenText, SamplingParams
from engine.runtime.requests import ScheduledRequest, SchedulerStats, WaitingLine
from engine.runtime.round_plan import SLICE_SPACING, PrefillPace, RoundPlan, plan_round
from engine.runtime.sampling import RowSampler, SeenTokens, choose_tokens

__all__ = ["SamplingParams", "GenQueued", "GenText", "GenFinished", "GenerationHandle", "GenerationScheduler"]

log = logging.getLogger(__name__)

# The most prompt tokens a round prefills, however fast the measured rate (round_plan.PrefillPace).
# A GPU prefills this many in milliseconds: unpaced, it takes 8x more every round.
PREFILL_TOKEN_BUDGET = 1024
CUDA_PREFILL_FACTOR = 8


class GenerationScheduler:
    """`loaded` is a model loaded here (LocalModel: engine/runtime/executor.py): its name, context
    window, tokenizer and stop tokens, and `executor()`, which makes the Executor that runs it.
    `on_fault(reference)` is called from the worker thread when a device fault has stopped it."""

    def __init__(self, loaded: LocalModel, config: SchedulerConfig,
                 on_fault: Callable[[str], None] | None = None) -> None:
        self._loaded = loaded
        self._on_fault = on_fault
        self._config = config
        self._exec: Executor = loaded.executor(config.cpu_threads or cpu_count(), config.max_batch,
                                               config.max_tokens_in_flight)
        self._device = self._exec.device
        cuda = self._device.type == "cuda"
        self._row_limit = self._exec.max_rows or 1 << 30  # what the executor's cache can hold
        self._max_batch = min(config.cuda_max_batch if cuda else config.max_batch, self._row_limit)
        self._pace = PrefillPace(PREFILL_TOKEN_BUDGET * (CUDA_PREFILL_FACTOR if cuda else 1),
                                 round_s=config.prefill_round_ms / 1000, paced=not cuda)
        self._max_tokens = min(config.max_tokens_in_flight, self._exec.max_tokens or config.max_tokens_in_flight)
        self._cond = threading.Condition()
        self._queue = WaitingLine()
        self._running: list[ScheduledRequest] = []  # row order of the batch
        self._starting = 0  # admitted, being prefilled
        self._next_slice_at = 0.0  # perf_counter time before which no background slice runs beside answers
        self._closing = False
        self._cancel_all = False
        self._dead: str | None = None  # the worker died: refuse new work instead of queueing forever
        self._dead_code = ErrorCode.GENERATION_FAILED
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._stats = SchedulerStats()
        self._seen = SeenTokens(self._exec.vocab_size, self._device)  # for repetition penalties
        self._stop_tensor = torch.tensor(sorted(loaded.stop_token_ids), dtype=torch.long, device=self._device)

    # ---- public API (event loop thread) ----
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name=f"generate-{self._loaded.name}", daemon=True)
            self._thread.start()

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle:
        window = self._loaded.context_window
        if not prompt_ids:
            raise ParleyError(ErrorCode.INVALID_REQUEST, "There is nothing to answer: the prompt is empty.")
        if len(prompt_ids) + 1 > window:
            raise ParleyError(ErrorCode.CONTEXT_TOO_LONG)
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._closing:
                raise ParleyError(ErrorCode.SHUTTING_DOWN)
            if self._dead:
                raise ParleyError(self._dead_code, reference=self._dead)
            free = max(0, self._max_batch - len(self._running) - self._starting)
            if len(self._queue) - free >= self._config.max_queue:
                raise ParleyError(ErrorCode.QUEUE_FULL)
            handle = GenerationHandle(loop, self._wake)
            request = ScheduledRequest(id=next(self._ids), prompt=list(prompt_ids), params=params,
                               max_new=max(1, min(params.max_new_tokens, window - len(prompt_ids))),
                               handle=handle, submitted=time.perf_counter())
            before = self._queue.ahead_of_new(params.background)
            if before >= free:  # it will wait: say so at once
                request.reported_ahead = before - free
                handle.emit(GenQueued(request.reported_ahead))
            self._queue.add(request)
            self._cond.notify()
        return handle

    async def shutdown(self, *, cancel: bool) -> None:
        """Take no new work; finish (cancel=False) or cancel (cancel=True) the rest; join the worker."""
        with self._cond:
            self._closing = True
            self._cancel_all = self._cancel_all or cancel
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        else:  # never started: nothing runs, the queued end here
            with self._cond:
                waiting = self._queue.drain()
            for request in waiting:
                self._finish(request, "cancelled")

    def set_max_batch(self, n: int) -> None:
        """Limit the batch (the memory monitor lowers it under pressure). Running rows above the new
        limit finish normally; no new row joins until the batch is below it."""
        with self._cond:
            self._max_batch = min(max(1, int(n)), self._row_limit)
            self._cond.notify()

    def snapshot(self) -> dict:
        with self._cond:
            return {
                "queued": len(self._queue),
                "running": len(self._running),
                "max_batch": self._max_batch,
                "max_queue": self._config.max_queue,
                "tokens_in_flight": sum(r.budget for r in self._running),
                "max_tokens_in_flight": self._max_tokens,
                "prefill_budget": self._pace.budget,
                "prefill_tokens_per_s": round(self._pace.tokens_per_s),
                **self._stats.figures(),
                "kv_cache_bytes": self._exec.cache_bytes(),
                **self._exec.describe(),
                "worker_alive": bool(self._thread and self._thread.is_alive()),
            }

    @property
    def executor(self) -> Executor:
        """The model work it runs (called on its worker thread only; a test may wrap a step)."""
        return self._exec

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # ---- worker thread ----
    def _worker(self) -> None:
        if self._device.type == "cpu":  # this thread's own OpenMP pool (engine.runtime.cpu)
            use_threads(self._exec.torch_threads or self._config.cpu_threads or cpu_count())
        try:
            self._exec.open()
            with torch.inference_mode():
                while self._serve_once():
                    pass
        except DeviceFailure as failure:  # the device is broken: the engine reloads the model
            self._die(failure.cause, failure.rows, ErrorCode.MODEL_FAULT)
        except BaseException as exc:  # a bug in the loop itself: fail everything, refuse new work
            self._die(exc, [], ErrorCode.GENERATION_FAILED)
        finally:
            self._exec.close()

    def _die(self, exc: BaseException, starting: list[ScheduledRequest], code: ErrorCode) -> None:
        """Fail every request this scheduler holds and refuse new ones from now on."""
        reference = new_reference()
        log.critical("generation worker stopped (%s)", code.value, exc_info=exc,
                     extra={"reference": reference, "model": self._loaded.name})
        with self._cond:
            self._dead = reference
            self._dead_code = code
            victims = list({id(r): r for r in (*self._queue.drain(), *self._running, *starting)}.values())  # each once
        self._fail(victims, reference, exc, code)
        try:
            self._drop_batch()
        except Exception:  # noqa: BLE001 - a broken device may refuse even this; the state is dropped anyway
            log.debug("could not clear the cache after the failure", exc_info=True)
        if code is ErrorCode.MODEL_FAULT and self._on_fault is not None:
            self._on_fault(reference)

    def _serve_once(self) -> bool:
        """One round: drop cancelled, admit, prefill newcomers, one decode step. False = exit."""
        with self._cond:
            while True:
                cancelled = self._queue.leave_cancelled(everyone=self._cancel_all)
                plan = self._admit()
                if cancelled or plan.joining or plan.slicing or self._running:
                    self._starting = len(plan.joining)
                    break
                if self._closing and not self._queue:
                    return False
                self._cond.wait()
            self._queue.report_positions(plan.order)
        for r in cancelled:
            self._finish(r, "cancelled")
        if plan.joining:
            valid = self._validated(plan.joining)
            self._prefill(valid, self._exec.prefill_groups([r.prompt for r in valid]))
        if plan.slicing is not None:
            self._warm_slice(plan.slicing, plan.slice_tokens)
        if self._running:
            self._decode_step()
        return True

    def _admit(self) -> RoundPlan:
        """This round's plan: the waiting requests that start now, and a prompt to slice (caller holds the lock)."""
        if self._cancel_all:
            return RoundPlan()
        now = time.perf_counter()
        plan = plan_round(self._queue.in_order(), self._running, self._exec.cached_prefix, self._pace,
                          can_slice=self._exec.can_warm, slice_due=now >= self._next_slice_at,
                          max_batch=self._max_batch, max_tokens=self._max_tokens, now=now)
        for r in plan.joining:
            self._queue.remove(r)
        return plan

    def _warm_slice(self, r: ScheduledRequest, tokens: int) -> None:
        """`tokens` more of a waiting prompt into the prefix cache; it joins once the rest fits a round."""
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            if not r.in_vocabulary(self._exec.vocab_size):
                raise ValueError("token id outside the vocabulary")
            self._exec.warm(r.prompt[:self._exec.cached_prefix(r.prompt) + tokens])
        except Exception as exc:  # noqa: BLE001 - only this request fails; the batch goes on
            if is_device_fault(exc):
                raise DeviceFailure(exc) from exc
            failure = exc
        elapsed = time.perf_counter() - started
        if failure is None:
            self._pace.record(tokens, elapsed)
        with self._cond:
            if r.params.background:
                self._next_slice_at = time.perf_counter() + SLICE_SPACING * elapsed
            self._stats.busy_seconds += elapsed
            self._stats.prefill_seconds += elapsed
            if failure is not None:
                self._queue.remove(r)
        if failure is not None:
            self._failed_step([r], failure, "prefill")

    def _validated(self, newcomers: list[ScheduledRequest]) -> list[ScheduledRequest]:
        """The newcomers whose token ids the model has; the others fail here, alone: on a GPU an
        id outside the vocabulary is a device-side assert that poisons the whole process."""
        valid = []
        for r in newcomers:
            if r.in_vocabulary(self._exec.vocab_size):
                valid.append(r)
            else:
                reference = new_reference()
                log.warning("token id outside the vocabulary", extra={"reference": reference,
                                                                       "model": self._loaded.name})
                self._fail([r], reference, ValueError("token id outside the vocabulary"))
        with self._cond:
            self._starting -= len(newcomers) - len(valid)
        return valid

    def _prefill(self, valid: list[ScheduledRequest], groups: list[list[int]]) -> None:
        """Prefill the newcomers in the executor's groups, each group joining the batch."""
        for k, group in enumerate(groups):
            members = [valid[i] for i in group]
            try:
                self._prefill_group(members)
            except DeviceFailure as failure:  # these and the groups after them never joined
                failure.rows = [valid[i] for later in groups[k:] for i in later]
                raise
            with self._cond:
                self._starting -= len(members)

    def _prefill_group(self, newcomers: list[ScheduledRequest]) -> None:
        computed = sum(len(r.prompt) - self._exec.cached_prefix(r.prompt) for r in newcomers)
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            logits = self._exec.prefill([r.prompt for r in newcomers])
        except Exception as exc:  # noqa: BLE001 - only these newcomers fail; the batch goes on
            failure = exc
        if failure is None:
            with self._cond:
                self._running.extend(newcomers)
            try:
                for r in newcomers:
                    r.sampler = RowSampler(r.params, self._device)
                    r.detok = IncrementalDetokenizer(self._loaded.tokenizer)
                seen = self._seen.of_newcomers([(r.params, r.prompt) for r in newcomers])
                tokens = self._choose(logits, newcomers, seen)
                self._seen.join(seen, len(self._running) - len(newcomers))
            except Exception as exc:  # noqa: BLE001 - the rows joined: take them out again
                failure = exc
                self._remove({id(r) for r in newcomers})
        elapsed = time.perf_counter() - started
        if failure is None:
            self._pace.record(computed, elapsed)
        with self._cond:
            self._stats.busy_seconds += elapsed
            self._stats.prefill_seconds += elapsed
            if failure is None:
                self._stats.prompt_tokens += sum(len(r.prompt) for r in newcomers)
        if failure is not None:
            if is_device_fault(failure):
                raise DeviceFailure(failure)
            if len(newcomers) == 1:
                self._failed_step(newcomers, failure, "prefill")
            else:  # find the one at fault: the others still get their answers
                for r in newcomers:
                    self._prefill_group([r])
            return
        self._advance(newcomers, tokens)

    def _decode_step(self) -> None:
        started = time.perf_counter()
        rows = list(self._running)
        try:
            logits = self._exec.decode([r.last_token for r in rows])
            tokens = self._choose(logits, rows, self._seen.table)
        except Exception as exc:  # noqa: BLE001 - the batch's state is unknown: fail its rows
            if is_device_fault(exc):
                raise DeviceFailure(exc) from exc
            self._failed_step(rows, exc, "decode")
            return
        finally:
            with self._cond:
                self._stats.busy_seconds += time.perf_counter() - started
                self._stats.decode_steps += 1
                self._stats.decode_rows += len(rows)
        self._advance(rows, tokens)

    def _choose(self, logits: torch.Tensor, rows: list[ScheduledRequest], seen: torch.Tensor | None) -> torch.Tensor:
        suppress = None
        if any(r.generated < r.params.min_new_tokens for r in rows):
            suppress = torch.tensor([r.generated < r.params.min_new_tokens for r in rows], device=logits.device)
        tokens = choose_tokens(logits, [r.sampler for r in rows], seen, suppress, self._stop_tensor)
        if seen is not None:
            seen[torch.arange(len(rows), device=seen.device), tokens] = True
        return tokens

    def _advance(self, rows: list[ScheduledRequest], tokens: torch.Tensor) -> None:
        """Record each row's new token, stream its text, and drop the rows that are done."""
        now = time.perf_counter()
        done: list[tuple[ScheduledRequest, str]] = []
        for r, token in zip(rows, tokens.tolist()):
            reason = r.take(token, now, self._loaded.stop_token_ids, self._cancel_all)
            if reason is not None:
                done.append((r, reason))
        with self._cond:
            self._stats.tokens_generated += len(rows)
        if done:
            self._remove({id(r) for r, _ in done})
            for r, reason in done:
                self._finish(r, reason)

    def _remove(self, leaving: set[int]) -> None:
        keep = [i for i, r in enumerate(self._running) if id(r) not in leaving]
        with self._cond:
            self._running = [self._running[i] for i in keep]
        self._exec.keep(keep)
        self._seen.keep(keep, [r.params for r in self._running])

    def _finish(self, r: ScheduledRequest, reason: str) -> None:
        finished = r.finish(reason, time.perf_counter())
        with self._cond:
            self._stats.requests_finished += 1
            self._stats.requests_cancelled += reason == "cancelled"
        r.handle.emit(finished)
        log.debug("generation finished", extra={"request": r.id, "reason": reason, "prompt_tokens": len(r.prompt),
                                               "completion_tokens": finished.completion_tokens,
                                               "seconds": round(finished.total_s, 3)})

    def _failed_step(self, rows: list[ScheduledRequest], exc: BaseException, stage: str) -> None:
        reference = new_reference()
        log.exception("generation step failed", extra={"stage": stage, "reference": reference,
                                                       "rows": len(rows), "model": self._loaded.name})
        if stage == "decode":
            self._drop_batch()
        self._fail(rows, reference, exc)

    def _drop_batch(self) -> None:
        with self._cond:
            self._running = []
        self._seen.clear()
        self._exec.clear()

    def _fail(self, rows: list[ScheduledRequest], reference: str, exc: BaseException,
              code: ErrorCode = ErrorCode.GENERATION_FAILED) -> None:
        with self._cond:
            self._stats.requests_failed += len(rows)
        for r in rows:
            r.handle.emit(ParleyError(code, reference=reference, detail=repr(exc)))
