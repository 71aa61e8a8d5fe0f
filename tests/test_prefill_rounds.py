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
from engine.runtime.scheduler import GenerationScheduler, GenQueued, GenText, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8, min_new_tokens=8)
STORY = SamplingParams(temperature=0.0, max_new_tokens=2000, min_new_tokens=2000)  # streams whatever it says


def long_prompt(model, tokens: int) -> list[int]:
    text = " ".join(docgen.everyday_paragraphs(60, seed=11))
    ids = model.chat_prompt_ids([{"role": "user", "content": f"What is this about?\n{text}"}])
    assert len(ids) >= tokens
    return ids[-tokens:]


def short_prompt(model) -> list[int]:
    return model.chat_prompt_ids([{"role": "user", "content": "What is the capital of France?"}])


class Story:
    """A long answer streaming in the background, and when each of its tokens came."""

    def __init__(self, handle, loop) -> None:
        self.handle = handle
        self.times: list[float] = []
        self._first = asyncio.Event()
        self._reader = loop.create_task(self._read(loop))

    async def _read(self, loop) -> None:
        async for event in self.handle:
            if isinstance(event, GenText):
                self.times.append(loop.time())
                self._first.set()

    async def started(self) -> None:
        await self._first.wait()

    async def stop(self) -> None:
        self.handle.cancel()
        await self._reader

    def between(self, start: float, end: float) -> list[float]:
        return [t for t in self.times if start < t < end]


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


async def test_waiting_users_are_told_the_places_answers_start_in(loaded_model):
    """One row, busy: a long question, then a short one, wait. The short one will start first, and
    both are told so while they wait: the long one is not left reading "next in line"."""
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=1, cuda_max_batch=1, cpu_threads=2))
    loop = asyncio.get_running_loop()
    told: dict[str, list[int]] = {"long": [], "short": []}
    started: dict[str, float] = {}

    async def follow(name: str, handle) -> None:
        async for event in handle:
            if isinstance(event, GenQueued):
                told[name].append(event.ahead)
            elif isinstance(event, GenText):
                started.setdefault(name, loop.time())

    scheduler.start()
    try:
        busy = Story(scheduler.submit(short_prompt(loaded_model), dataclasses.replace(GREEDY, max_new_tokens=24,
                                                                                      min_new_tokens=24)), loop)
        await busy.started()
        await asyncio.gather(follow("long", scheduler.submit(long_prompt(loaded_model, 1500), GREEDY)),
                             follow("short", scheduler.submit(short_prompt(loaded_model), GREEDY)))
        await busy.stop()
    finally:
        await scheduler.shutdown(cancel=True)
    assert started["short"] < started["long"]
    # Told at once the places in arrival order, then the planner's: the short one passes the long one.
    assert told == {"long": [0, 1, 0], "short": [1, 0]}


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
        story = Story(scheduler.submit(short_prompt(loaded_model), STORY), loop)
        await story.started()
        asked_at = loop.time()
        answered_at, sliced_text = await first_text_at(scheduler.submit(question, GREEDY), loop)
        await story.stop()
    finally:
        await scheduler.shutdown(cancel=True)
    assert len(slices) >= 2, "computed in slices, not in one prefill"
    assert len(story.between(asked_at, answered_at)) >= len(slices), "the story went on between the slices"

    whole = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cuda_max_batch=4, cpu_threads=2))
    whole.executor.can_warm = False  # the first in line is prefilled whole
    whole.start()
    try:
        _, whole_text = await first_text_at(whole.submit(question, GREEDY), loop)
    finally:
        await whole.shutdown(cancel=True)
    assert sliced_text == whole_text


async def test_a_burst_of_long_questions_does_not_freeze_a_streaming_answer(loaded_model):
    """Enough long questions at once to need several rounds on any device (a GPU's budget is 8x a
    CPU's ceiling): the story streams between their first tokens, not only after the last."""
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=8, cuda_max_batch=8, cpu_threads=2))
    loop = asyncio.get_running_loop()
    scheduler.start()
    try:
        story = Story(scheduler.submit(short_prompt(loaded_model), STORY), loop)
        await story.started()
        context = "The harbour town lies at the mouth of a slow river, and its boats leave before dawn. " * 25
        ask = [{"role": "user", "content": f"Question {i}: when do the boats leave?\n{context}"} for i in range(64)]
        assert len(loaded_model.chat_prompt_ids(ask[0:1])) > 400
        count = 2 * scheduler.snapshot()["prefill_budget"] // 400 + 1
        burst = [scheduler.submit(loaded_model.chat_prompt_ids([a]), GREEDY) for a in ask[:count]]
        firsts = sorted([at for at, _ in await asyncio.gather(*(first_text_at(h, loop) for h in burst))])
        await story.stop()
    finally:
        await scheduler.shutdown(cancel=True)
    assert story.between(firsts[0], firsts[-1]), "the story went on between the burst's prefills"
