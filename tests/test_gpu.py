"""On a CUDA GPU (skipped elsewhere; `make test-gpu`): bad input fails alone without poisoning the
device, and a real device-side assert ends with the model reloaded or the process asking its
supervisor for a restart, never with every later request failing. Weight-independent: they pass
with the random-weights stand-in of tools/gpu."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.config import SchedulerConfig
from engine.errors import ErrorCode, ParleyError
from engine.runtime.generation import GenFinished, SamplingParams
from engine.runtime.scheduler import GenerationScheduler

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parent.parent


async def run(handle) -> GenFinished:
    final = None
    async for event in handle:
        final = event
    return final


async def test_an_out_of_vocabulary_id_fails_alone_and_the_gpu_keeps_serving(loaded_model):
    assert loaded_model.device.type == "cuda"
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cuda_max_batch=4))
    scheduler.start()
    fixed = SamplingParams(max_new_tokens=8, min_new_tokens=8)
    ids = loaded_model.chat_prompt_ids([{"role": "user", "content": "Name a colour."}])
    good = scheduler.submit(ids, fixed)
    bad = scheduler.submit([1, 2, len(loaded_model.tokenizer) + 10], fixed)
    with pytest.raises(ParleyError) as failed:
        await run(bad)
    assert failed.value.code is ErrorCode.GENERATION_FAILED
    assert (await run(good)).completion_tokens == 8
    assert (await run(scheduler.submit(ids, fixed))).completion_tokens == 8  # the context is not poisoned
    await scheduler.shutdown(cancel=True)


FAULT_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys, time
    sys.path[:0] = [{root!r}, {tests!r}]
    import torch
    from conftest import make_config
    from engine.core import Engine
    from engine.types import AnswerDone, ChatRequest, Conversation, User

    def ask(thread):
        return ChatRequest(where=Conversation("console", "local", "console", thread), user=User(id="u"),
                           text="Name a colour.")

    async def final(engine, thread):
        return [e async for e in engine.answer(ask(thread))][-1]

    async def main():
        engine = Engine(make_config({data!r}, knowledge={{"enabled": False}}))
        await engine.start()
        executor = engine.lineup.live.scheduler._exec
        real = executor.decode

        def decode(tokens):  # a real device-side assert: an index past the logits, on the GPU
            logits = real(tokens)
            bad = torch.tensor([logits.shape[-1] + 5], device=logits.device)
            return torch.index_select(logits, 1, bad).cpu()

        executor.decode = decode
        first = await final(engine, "a")
        deadline = time.monotonic() + 120
        while not (engine.recovery.reloads or engine.recovery.exit_requested.is_set()):
            assert time.monotonic() < deadline, "neither reloaded nor exiting"
            await asyncio.sleep(0.1)
        after = await final(engine, "b") if engine.recovery.reloads else None
        print(json.dumps({{"first": getattr(first, "code", None), "reloads": engine.recovery.reloads,
                          "exit_code": engine.recovery.exit_code,
                          "after_done": isinstance(after, AnswerDone)}}))
        await engine.stop()

    asyncio.run(main())
""")


def test_a_real_device_side_assert_ends_in_a_reload_or_an_exit(tmp_path):
    """In a process of its own: the assert poisons that process's CUDA context for good."""
    script = FAULT_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), data=str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["first"] == ErrorCode.MODEL_FAULT.value, outcome
    # Either the reload worked and answers flow again, or the process asks to be restarted.
    assert (outcome["reloads"] == 1 and outcome["after_done"]) or outcome["exit_code"] == 70, outcome
