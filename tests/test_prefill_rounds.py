"""How a round prefills prompts (engine/runtime/round_plan.py): a short question is not stuck
behind a long prompt asked a moment before it, and a long prompt is computed in slices while
answers keep streaming, its answer the one a whole prefill gives. Through the real scheduler and
the packaged model; nothing here depends on the model's words or the CPU's speed."""
from __future__ import annotations

import asyncio
import dataclasses

import docgen
import pytest

from engine.config import SchedulerConfig
from engine.runtime.scheduler import GenerationScheduler, GenText, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8, min_new_tokens=8)


def long_prompt(model, tokens: int) -> list[int]:
    text = " ".join(docgen.everyday_paragraphs(60, seed=11))
    ids = model.chat_prompt_ids([{"role": "user", "content": f"What is this about?\n{text}"}])
    assert len(ids) >= tokens
    return ids[-tokens:]


def short_prompt(model) -> list[int]:
    return model.chat_prompt_ids([{"role": "user", "content": "What is the capital of France?"}])


async def first_text_at(handle, loop) -> tuple[float, list[str]]:
    """When the first text came, and all the text."""
    first = None
    parts = []
    async for event in handle:
        if isinstance(event, GenText):
            first = loop.time() if first is None else first
            parts.append(event.text)
    assert first is not None, "no answer"
    return first, parts


async def test_a_short_question_starts_before_a_long_prompt_asked_a_moment_earlier(loaded_model):
    """Both wait when the round is planned, the long one first in line: the short one's first
    token comes first (highest response ratio next), and the long one is still answered."""
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cuda_max_batch=4, cpu_threads=2))
    loop = asyncio.get_running_loop()
    long = scheduler.submit(long_prompt(loaded_model, 1500), GREEDY)
    short = scheduler.submit(short_prompt(loaded_model), GREEDY)
    scheduler.start()
    try:
        (long_at, long_text), (short_at, _) = await asyncio.gather(first_text_at(long, loop),
                                                                   first_text_at(short, loop))
    finally:
        await scheduler.shutdown(cancel=True)
    assert short_at < long_at
    assert long_text


async def test_a_long_question_is_prefilled_in_slices_while_an_answer_streams(loaded_model):
    """A 1,500-token question (over any round's budget) arrives while a story streams: the story
    gets tokens between the question's slices instead of waiting for its whole prefill, and the
    question's answer equals the one a whole prefill gives."""
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cuda_max_batch=4, cpu_threads=2))
    if not scheduler.executor.can_warm:
        pytest.skip("this executor keeps no prefix cache: a prompt is prefilled whole (a GPU's are milliseconds)")
    loop = asyncio.get_running_loop()
    slices: list[float] = []  # when each slice of the question ended
    real_warm = scheduler.executor.warm

    def warm(tokens):
        real_warm(tokens)
        slices.append(loop.time())

    scheduler.executor.warm = warm
    question = long_prompt(loaded_model, 1500)
    scheduler.start()
    try:
        story = scheduler.submit(short_prompt(loaded_model), dataclasses.replace(GREEDY, max_new_tokens=2000,
                                                                                min_new_tokens=2000))
        story_at: list[float] = []
        first = asyncio.Event()

        async def read_story():
            async for event in story:
                if isinstance(event, GenText):
                    story_at.append(loop.time())
                    first.set()

        reader = asyncio.create_task(read_story())
        await first.wait()
        asked_at = loop.time()
        answered_at, sliced_text = await first_text_at(scheduler.submit(question, GREEDY), loop)
        story.cancel()
        await reader
    finally:
        await scheduler.shutdown(cancel=True)
    assert len(slices) >= 2, "computed in slices, not in one prefill"
    during = [t for t in story_at if asked_at < t < answered_at]
    assert len(during) >= len(slices), "the story went on between the slices"

    whole = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cuda_max_batch=4, cpu_threads=2))
    whole.executor.can_warm = False  # the first in line is prefilled whole
    whole.start()
    try:
        _, whole_text = await first_text_at(whole.submit(question, GREEDY), loop)
    finally:
        await whole.shutdown(cancel=True)
    assert sliced_text == whole_text
