"""A device fault (a CUDA device-side assert, an illegal memory access) breaks the device for every
later step. The scheduler fails what it held with MODEL_FAULT and stops; the engine reloads the
model (or asks the process to exit, for a supervisor to restart it). Simulated here on the CPU by
an executor step that raises the error CUDA would raise."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from conftest import collect, make_config
from engine.config import SchedulerConfig
from engine.errors import ErrorCode, ParleyError
from engine.runtime.executor import is_device_fault
from engine.runtime.generation import GenFinished, SamplingParams
from engine.runtime.scheduler import GenerationScheduler
from engine.types import AnswerDone, AnswerFailed, ChatRequest, Conversation, User

ASSERT = "CUDA error: device-side assert triggered"
ALICE = User(id="U1", name="alice")


def ask(text: str, thread: str) -> ChatRequest:
    return ChatRequest(where=Conversation("console", "local", "console", thread), user=ALICE, text=text)


def test_device_faults_are_told_from_failures_of_one_step():
    assert is_device_fault(torch.AcceleratorError(ASSERT))
    assert is_device_fault(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_device_fault(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_device_fault(ValueError("token id outside the vocabulary"))
    assert not is_device_fault(RuntimeError("llama_decode returned 1"))


def fail_decode_once_both_are_in(engine, held: int) -> threading.Event:
    """The live executor's next decode step waits until `held` requests are in the scheduler,
    then raises what CUDA raises after a device-side assert."""
    backend = engine.lineup.live
    scheduler, executor = backend.scheduler, backend.scheduler._exec
    raised = threading.Event()

    def decode(tokens):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = scheduler.snapshot()
            if snap["running"] + snap["queued"] >= held:
                break
            time.sleep(0.01)
        raised.set()
        raise torch.AcceleratorError(ASSERT)

    executor.decode = decode
    return raised


async def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_device_fault_fails_what_the_model_held_and_the_model_is_reloaded(engine_factory, tmp_path,
                                                                                   loaded_model):
    loads = []
    config = make_config(tmp_path / "data", knowledge={"enabled": False}, scheduler={"max_batch": 1})
    engine = await engine_factory(config, model_loader=lambda cfg: loads.append(cfg.name) or loaded_model)
    broken = engine.lineup.live
    fail_decode_once_both_are_in(engine, held=2)  # one running, one queued behind it (max_batch 1)

    results = await asyncio.gather(collect(engine, ask("Name a colour.", "a")),
                                   collect(engine, ask("Name a fruit.", "b")))
    finals = [final for _, final, _ in results]
    assert all(isinstance(f, AnswerFailed) and f.code is ErrorCode.MODEL_FAULT for f in finals), finals
    assert finals[0].reference == finals[1].reference  # one fault, one reference in the log
    assert "restarting" in finals[0].message

    await wait_for(lambda: engine.recovery.reloads == 1)
    assert engine.lineup.live is not broken and loads == ["smollm2-135m", "smollm2-135m"]
    assert broken.scheduler is None  # the broken one was shut down and let go
    _, final, _ = await collect(engine, ask("What is the capital of France?", "c"))
    assert isinstance(final, AnswerDone), final
    assert engine.recovery.exit_code is None


async def test_exit_mode_asks_the_process_to_exit_for_its_supervisor(engine_factory, tmp_path):
    config = make_config(tmp_path / "data", knowledge={"enabled": False},
                         scheduler={"max_batch": 1, "on_device_fault": "exit"})
    engine = await engine_factory(config)
    fail_decode_once_both_are_in(engine, held=1)
    _, final, _ = await collect(engine, ask("Name a colour.", "a"))
    assert final.code is ErrorCode.MODEL_FAULT
    await asyncio.wait_for(engine.recovery.exit_requested.wait(), 10)
    assert engine.recovery.exit_code == 70 and engine.recovery.reloads == 0
    _, again, _ = await collect(engine, ask("Anyone there?", "b"))  # no more work on the broken device
    assert isinstance(again, AnswerFailed) and again.code is ErrorCode.MODEL_FAULT


async def test_a_second_fault_soon_after_a_reload_exits(engine_factory, core_config):
    engine = await engine_factory(core_config)
    engine.recovery._last_reload = time.monotonic()  # as if it had just been reloaded
    fail_decode_once_both_are_in(engine, held=1)
    await collect(engine, ask("Name a colour.", "a"))
    await asyncio.wait_for(engine.recovery.exit_requested.wait(), 10)
    assert engine.recovery.reloads == 0


async def test_a_fault_in_prefill_fails_every_newcomer_at_once(loaded_model):
    faults: list[str] = []
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4), on_fault=faults.append)
    calls = []

    def prefill(prompts):
        calls.append(len(prompts))
        raise torch.AcceleratorError(ASSERT)

    scheduler._exec.prefill = prefill
    ids = [loaded_model.chat_prompt_ids([{"role": "user", "content": f"Question {i}?"}]) for i in range(3)]
    handles = [scheduler.submit(p, SamplingParams(max_new_tokens=4)) for p in ids]  # before the worker starts
    scheduler.start()
    codes = []
    for handle in handles:
        with pytest.raises(ParleyError) as failed:
            async for event in handle:
                assert not isinstance(event, GenFinished)
        codes.append(failed.value.code)
    assert codes == [ErrorCode.MODEL_FAULT] * 3
    assert len(calls) == 1, "a broken device is not retried row by row"
    await wait_for(lambda: len(faults) == 1)
    with pytest.raises(ParleyError) as refused:
        scheduler.submit(ids[0], SamplingParams(max_new_tokens=4))
    assert refused.value.code is ErrorCode.MODEL_FAULT and refused.value.reference == faults[0]
    await scheduler.shutdown(cancel=True)
