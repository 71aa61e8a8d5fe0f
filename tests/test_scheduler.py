"""The continuous-batching scheduler, on the real packaged model, with both runtimes: `loaded_model`
is the model as deployed (llama.cpp on a CPU, transformers on a GPU), `exact_model` transformers
in float32.

What a user would notice: an answer does not change because other people are being answered at
the same time (greedy answers alone == inside a busy, changing batch == the runtime's own greedy
generate; exactly so in float32, where rounding does not depend on the batch's shape), a burst of long
questions does not freeze the answers already streaming,
a cancel stops only its own answer, limits are enforced with the right error, streamed text joins
into exactly the decoded answer (accents and emoji included), queued users see their position,
and a shutdown ends everything cleanly.
"""
from __future__ import annotations

import asyncio
import dataclasses

import docgen
import pytest
import torch

from engine.config import SchedulerConfig
from engine.errors import ErrorCode, ParleyError
from engine.runtime.scheduler import (GenerationScheduler, GenFinished, GenQueued, GenText, SamplingParams)

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for sleeping better.",
    "Why is the sky blue? Explain it to a ten year old child in a few sentences.",
]
FILLERS = [
    "Name a colour.", "What is 2 + 2?", "Tell me a joke about cats.", "List four fruits.",
    "Write one sentence about trains.", "What do bees make?", "Describe a forest at night in detail.",
    "Say hello in Spanish.", "What is the largest planet?", "Write a short poem about rain.",
    "How many days are in a week?", "Suggest a name for a dog.",
]
EMOJI = "Reply with three emoji that describe happiness."
FRENCH = "Translate into French: 'The summer is very hot, and my brother is at the café near the sea.'"


@dataclasses.dataclass
class Result:
    events: list
    text: str
    final: GenFinished


async def collect(handle, on_first_text=None) -> Result:
    events, parts = [], []
    async for event in handle:
        events.append(event)
        if isinstance(event, GenText):
            if not parts and on_first_text is not None:
                on_first_text()
            parts.append(event.text)
    assert isinstance(events[-1], GenFinished), events[-1]
    return Result(events, "".join(parts), events[-1])


@pytest.fixture
async def make_scheduler(loaded_model):
    """Start schedulers on the shared model; each is shut down (cancelling) after the test."""
    made: list[GenerationScheduler] = []

    def build(loaded=None, **config) -> GenerationScheduler:
        if "max_batch" in config:  # the limit a test sets holds on a GPU too (not cuda_max_batch)
            config.setdefault("cuda_max_batch", config["max_batch"])
        scheduler = GenerationScheduler(loaded or loaded_model, SchedulerConfig(**config))
        scheduler.start()
        made.append(scheduler)
        return scheduler

    yield build
    for scheduler in made:
        await asyncio.wait_for(scheduler.shutdown(cancel=True), 60)


def prompt(loaded, question: str) -> list[int]:
    return loaded.chat_prompt_ids([{"role": "user", "content": question}])


def reference_greedy(loaded, ids: list[int], max_new_tokens: int) -> list[int]:
    """The runtime's own greedy answer: transformers' generate, or llama.cpp's."""
    if hasattr(loaded, "model"):
        return hf_greedy(loaded, ids, max_new_tokens)
    return llama_cpp_greedy(loaded, ids, max_new_tokens)


def llama_cpp_greedy(loaded, ids: list[int], max_new_tokens: int) -> list[int]:
    """llama-cpp-python's own greedy answer on the same GGUF, cut at the first stop token."""
    from llama_cpp import Llama

    # The file Parley computes on: the GGUF, or its Q8_0 copy where that is faster (llama_weights.py)
    llm = Llama(model_path=str(loaded.path), n_ctx=2048, n_threads=2, flash_attn=True, verbose=False)
    answer: list[int] = []
    for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
        if token in loaded.stop_token_ids or len(answer) >= max_new_tokens:
            break
        answer.append(token)
    return answer


def hf_greedy(loaded, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own greedy answer, cut at the first stop token (the stop token excluded)."""
    x = torch.tensor([ids], device=loaded.device)
    with torch.inference_mode():
        out = loaded.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                    do_sample=False, eos_token_id=sorted(loaded.stop_token_ids))
    answer = []
    for token in out[0, len(ids):].tolist():
        if token in loaded.stop_token_ids:
            break
        answer.append(token)
    return answer


_alone: dict[int, dict[str, Result]] = {}


async def answers_alone(make_scheduler, loaded) -> dict[str, Result]:
    """Each question answered with nobody else around (computed once per model and test session)."""
    if id(loaded) not in _alone:
        scheduler = make_scheduler(loaded, max_batch=16)
        _alone[id(loaded)] = {q: await collect(scheduler.submit(prompt(loaded, q), GREEDY)) for q in QUESTIONS}
    return _alone[id(loaded)]


@pytest.mark.real_weights
async def test_greedy_answer_alone_is_transformers_generate(make_scheduler, exact_model):
    alone = await answers_alone(make_scheduler, exact_model)
    q = QUESTIONS[0]
    expected = exact_model.tokenizer.decode(hf_greedy(exact_model, prompt(exact_model, q), 24),
                                            skip_special_tokens=True)
    assert alone[q].text == expected
    assert "Paris" in alone[q].text


async def test_greedy_answers_alone_are_the_runtimes_own(make_scheduler, loaded_model):
    """As deployed (llama.cpp on a CPU): each answer is what the library itself answers."""
    alone = await answers_alone(make_scheduler, loaded_model)
    for q in QUESTIONS[:2]:
        expected = loaded_model.tokenizer.decode(reference_greedy(loaded_model, prompt(loaded_model, q), 24),
                                                 skip_special_tokens=True)
        assert alone[q].text == expected, q


@pytest.mark.real_weights  # near-ties everywhere with random weights
async def test_greedy_answers_in_one_batch_are_the_runtimes_own(make_scheduler, loaded_model):
    """As deployed, four questions answered at once, in one batch, with prompts that share no
    prefix: each answer is, token for token, what the library answers it alone on the same file
    (llama-cpp-python's generate on Parley's GGUF; transformers on a GPU)."""
    scheduler = make_scheduler(max_batch=4)
    questions = QUESTIONS[:3] + [FRENCH]
    handles = [scheduler.submit(prompt(loaded_model, q), GREEDY) for q in questions]  # one batch
    results = await asyncio.gather(*(collect(h) for h in handles))
    assert scheduler.snapshot()["mean_batch"] > 1, "they were computed together"
    for q, got in zip(questions, results):
        want = reference_greedy(loaded_model, prompt(loaded_model, q), 24)
        shown = loaded_model.tokenizer.decode(want, skip_special_tokens=True)
        agree = next((i for i, (a, b) in enumerate(zip(got.text, shown)) if a != b), min(len(got.text), len(shown)))
        assert got.text == shown, f"{q!r}: the batch's answer leaves the library's at character {agree}: " \
                                  f"{got.text[agree:agree + 40]!r} against {shown[agree:agree + 40]!r}"


@pytest.mark.slow
@pytest.mark.real_weights  # near-ties everywhere with random weights
async def test_answers_do_not_change_inside_a_busy_changing_batch(make_scheduler, exact_model):
    """In float32 only: llama.cpp's batched kernels (like 16-bit torch) sum in another order than
    its one-row kernels, which can flip a near-tie (README, "Exactness")."""
    loaded_model = exact_model
    alone = await answers_alone(make_scheduler, loaded_model)
    scheduler = make_scheduler(loaded_model, max_batch=16)
    started = asyncio.Event()

    async def filler(i: int) -> Result:
        await asyncio.sleep(0.15 * (i % 4))
        # Short answers leave mid-way; long ones keep the batch busy after the questions join.
        params = SamplingParams(temperature=0.0, max_new_tokens=(3, 9, 40)[i % 3])
        return await collect(scheduler.submit(prompt(loaded_model, FILLERS[i]), params), started.set)

    async def question(i: int) -> Result:
        if i:  # all but the first join a batch that is already decoding
            await started.wait()
            await asyncio.sleep(0.2 * i)
        return await collect(scheduler.submit(prompt(loaded_model, QUESTIONS[i]), GREEDY))

    results = await asyncio.gather(*(filler(i) for i in range(len(FILLERS))),
                                   *(question(i) for i in range(len(QUESTIONS))))
    for q, got in zip(QUESTIONS, results[len(FILLERS):]):
        assert got.text == alone[q].text, q
        assert got.final.completion_tokens == alone[q].final.completion_tokens
    lengths = [r.final.completion_tokens for r in results[:len(FILLERS)]]
    assert all(n <= (3, 9, 40)[i % 3] for i, n in enumerate(lengths))
    snap = scheduler.snapshot()
    assert snap["requests_finished"] == len(FILLERS) + len(QUESTIONS)
    assert snap["decode_steps"] > 0 and snap["tokens_generated"] >= sum(lengths)
    assert snap["running"] == 0 and snap["queued"] == 0


@pytest.mark.real_weights  # near-ties everywhere with random weights
async def test_cancelling_one_answer_leaves_the_others_untouched(make_scheduler, exact_model):
    loaded_model = exact_model
    alone = await answers_alone(make_scheduler, loaded_model)
    scheduler = make_scheduler(loaded_model, max_batch=8)
    victim = scheduler.submit(prompt(loaded_model, "Write a long story about a dragon and a knight."),
                              SamplingParams(max_new_tokens=200))
    others = [scheduler.submit(prompt(loaded_model, q), GREEDY) for q in QUESTIONS[:3]]
    results = await asyncio.gather(collect(victim, victim.cancel), *(collect(h) for h in others))
    assert results[0].final.reason == "cancelled"
    assert results[0].final.completion_tokens < 200
    for q, got in zip(QUESTIONS, results[1:]):
        assert got.text == alone[q].text
        assert got.final.reason in ("stop", "length")


def test_prefill_groups_keep_padding_small():
    from engine.runtime.torch_executor import PREFILL_PADDING, length_groups

    lengths = [265, 37, 37, 338, 638, 36, 339, 114, 37, 115, 638, 116, 266, 115, 189, 489]
    groups = length_groups(lengths, key=lambda n: n)
    assert sorted(n for g in groups for n in g) == sorted(lengths)
    for group in groups:
        assert max(group) * len(group) <= (1 + PREFILL_PADDING) * sum(group)
    assert [g[0] for g in groups] == sorted((g[0] for g in groups), reverse=True)  # longest first
    assert len(groups) <= 6, groups  # and not one forward pass per question


async def test_a_full_queue_refuses_with_queue_full(make_scheduler, loaded_model):
    scheduler = make_scheduler(max_batch=1, max_queue=1)
    long = SamplingParams(max_new_tokens=300, min_new_tokens=300)  # holds its slot whatever the model says
    first = scheduler.submit(prompt(loaded_model, "Tell me a long story."), long)
    async for event in first:  # the first request is running once its text flows
        if isinstance(event, GenText):
            break
    second = scheduler.submit(prompt(loaded_model, "And another one."), long)
    with pytest.raises(ParleyError) as refused:
        scheduler.submit(prompt(loaded_model, "One more?"), long)
    assert refused.value.code is ErrorCode.QUEUE_FULL
    assert scheduler.snapshot()["queued"] == 1
    first.cancel()
    second.cancel()
    assert (await collect(second)).final.reason == "cancelled"


async def test_context_window_is_enforced_and_answers_are_clipped_to_it(make_scheduler, loaded_model):
    small = dataclasses.replace(loaded_model, config=dataclasses.replace(loaded_model.config, context_window=256))
    scheduler = make_scheduler(loaded=small)
    words = loaded_model.tokenizer.encode(" lighthouse" * 400, add_special_tokens=False)
    with pytest.raises(ParleyError) as too_long:
        scheduler.submit(words[:256], GREEDY)
    assert too_long.value.code is ErrorCode.CONTEXT_TOO_LONG
    # Room for 6 more tokens: the answer stops there however many were asked for.
    got = await collect(scheduler.submit(words[:250], SamplingParams(max_new_tokens=100)))
    assert got.final.prompt_tokens == 250
    assert 1 <= got.final.completion_tokens <= 6
    assert got.final.reason in ("length", "stop")


async def test_max_new_tokens_is_respected(make_scheduler, loaded_model):
    scheduler = make_scheduler()
    got = await collect(scheduler.submit(prompt(loaded_model, "Write a long essay about the history of Rome."),
                                         SamplingParams(max_new_tokens=5)))
    assert got.final.reason == "length"
    assert got.final.completion_tokens == 5
    assert got.final.total_s >= got.final.first_token_s > 0


@pytest.mark.real_weights
@pytest.mark.parametrize("question,tokens", [(FRENCH, 40), (EMOJI, 40)])
async def test_streamed_text_joins_into_the_decoded_answer(make_scheduler, loaded_model, question, tokens):
    """Accents and emoji span several tokens: no broken characters, no lost spaces, no lost text."""
    scheduler = make_scheduler()
    ids = prompt(loaded_model, question)
    got = await collect(scheduler.submit(ids, SamplingParams(max_new_tokens=tokens)))
    expected = loaded_model.tokenizer.decode(reference_greedy(loaded_model, ids, tokens), skip_special_tokens=True)
    assert got.text == expected
    assert any(ord(c) > 127 for c in got.text), "the prompt makes the model write non-ASCII text"
    deltas = [e.text for e in got.events if isinstance(e, GenText)]
    # Only the very end may hold an unfinished character (the answer was cut mid-emoji).
    assert not any("\ufffd" in d for d in deltas[:-1])


def test_incremental_detokenizer_matches_full_decode_on_hard_text(loaded_model):
    from engine.runtime.detokenize import IncrementalDetokenizer

    tok = loaded_model.tokenizer
    samples = ["Le café est très chaud, naïve élève!", "Emoji: 🌱🎉👩‍👩‍👧 done.", "  leading spaces\n\tand tabs",
               "中文字符和日本語のテキスト", "mixed: ü ö ä ß — “quotes” … €100"]
    for text in samples:
        ids = tok.encode(text, add_special_tokens=False)
        detok = IncrementalDetokenizer(tok)
        deltas = [detok.push(t) for t in ids]
        deltas.append(detok.finish())
        assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True), text
        assert not any("\ufffd" in d for d in deltas), text


async def test_queued_requests_see_their_position(make_scheduler, loaded_model):
    scheduler = make_scheduler(max_batch=1)
    params = SamplingParams(max_new_tokens=6, min_new_tokens=6)  # each holds the slot for 6 tokens
    handles = [scheduler.submit(prompt(loaded_model, f"Question number {i}: name a colour."), params)
               for i in range(3)]
    results = await asyncio.gather(*(collect(h) for h in handles))
    positions = [[e.ahead for e in r.events if isinstance(e, GenQueued)] for r in results]
    assert positions[1] and positions[1][0] == 0
    assert positions[2][:2] == [1, 0], positions  # moves up when the one in front starts
    for r in results:
        kinds = [type(e) for e in r.events]
        first_text = kinds.index(GenText) if GenText in kinds else len(kinds)
        assert GenQueued not in kinds[first_text:], "no queue note after the answer started"
        assert r.final.reason == "length"
    assert results[2].final.first_token_s > results[0].final.first_token_s


async def test_shutdown_with_cancel_ends_everything(loaded_model):
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=2))
    scheduler.start()
    long = SamplingParams(max_new_tokens=400)
    handles = [scheduler.submit(prompt(loaded_model, f"Tell me a long story number {i}."), long) for i in range(4)]
    tasks = [asyncio.ensure_future(collect(h)) for h in handles]
    while scheduler.snapshot()["tokens_generated"] == 0:
        await asyncio.sleep(0.05)
    await asyncio.wait_for(scheduler.shutdown(cancel=True), 60)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert [r.final.reason for r in results] == ["cancelled"] * 4
    with pytest.raises(ParleyError) as refused:
        scheduler.submit(prompt(loaded_model, "Anyone there?"), GREEDY)
    assert refused.value.code is ErrorCode.SHUTTING_DOWN


async def test_shutdown_without_cancel_lets_answers_finish(loaded_model):
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=1))
    scheduler.start()
    handles = [scheduler.submit(prompt(loaded_model, q), SamplingParams(max_new_tokens=4)) for q in QUESTIONS[:2]]
    tasks = [asyncio.ensure_future(collect(h)) for h in handles]
    await asyncio.sleep(0)
    await asyncio.wait_for(scheduler.shutdown(cancel=False), 60)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all(r.final.reason in ("length", "stop") and r.text for r in results)


async def test_a_seeded_sample_is_reproducible_in_any_company(make_scheduler, loaded_model):
    scheduler = make_scheduler(max_batch=8)
    ids = prompt(loaded_model, "Write a sentence about a cat.")
    sampled = SamplingParams(temperature=0.9, top_p=0.95, top_k=50, repetition_penalty=1.1,
                             max_new_tokens=16, seed=1234)
    alone = await collect(scheduler.submit(ids, sampled))
    crowd = [scheduler.submit(prompt(loaded_model, q), GREEDY) for q in QUESTIONS[:3]]
    again, *_ = await asyncio.gather(collect(scheduler.submit(ids, sampled)), *(collect(h) for h in crowd))
    assert again.text == alone.text
    other = await collect(scheduler.submit(ids, dataclasses.replace(sampled, seed=99)))
    assert other.text != alone.text


async def test_a_bad_request_fails_alone_with_generation_failed(make_scheduler, loaded_model):
    scheduler = make_scheduler(max_batch=4)
    vocab = len(loaded_model.tokenizer)
    good = scheduler.submit(prompt(loaded_model, QUESTIONS[0]), SamplingParams(max_new_tokens=8))
    bad = scheduler.submit([1, 2, vocab + 10], SamplingParams(max_new_tokens=8))  # no such token
    with pytest.raises(ParleyError) as failed:
        await collect(bad)
    assert failed.value.code is ErrorCode.GENERATION_FAILED
    assert (await collect(good)).final.reason in ("stop", "length")
    # The scheduler keeps serving.
    assert (await collect(scheduler.submit(prompt(loaded_model, "Hi!"), SamplingParams(max_new_tokens=3)))).text


async def test_a_smaller_batch_limit_makes_newcomers_wait(make_scheduler, loaded_model):
    scheduler = make_scheduler(max_batch=4)
    scheduler.set_max_batch(1)
    assert scheduler.snapshot()["max_batch"] == 1
    params = SamplingParams(max_new_tokens=4)
    first = scheduler.submit(prompt(loaded_model, "Name a fruit."), params)
    second = scheduler.submit(prompt(loaded_model, "Name a tree."), params)
    a, b = await asyncio.gather(collect(first), collect(second))
    assert any(isinstance(e, GenQueued) for e in b.events)
    snap = scheduler.snapshot()
    for key in ("queued", "running", "max_batch", "tokens_generated", "requests_finished", "busy_seconds",
                "decode_steps"):
        assert key in snap, key


async def test_an_answer_starts_before_background_work_queued_ahead_of_it(loaded_model):
    """A summary's part (background: a long prompt nobody reads token by token) waits in line
    before a question: the question is prefilled first. Where the runtime keeps a prefix cache
    (llama.cpp) the long prompt is computed in slices of WARM_SLICE tokens, one a round, so a
    question asked meanwhile waits for a slice, not for the whole prompt; its answer is the one a
    whole prefill gives."""
    from engine.runtime.round_plan import WARM_SLICE

    text = " ".join(docgen.everyday_paragraphs(40, seed=3))
    long_ids = loaded_model.chat_prompt_ids([{"role": "user", "content": f"Summarise this:\n{text}"}])
    long_ids = long_ids[-1500:] if len(long_ids) > 1500 else long_ids
    assert len(long_ids) > 4 * WARM_SLICE
    question = prompt(loaded_model, "What is the capital of France?")
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cuda_max_batch=4, cpu_threads=2))
    executor = scheduler.executor
    computed: list[tuple[str, int]] = []  # (what, prompt tokens computed), in order
    real_prefill = executor.prefill
    real_warm = executor.warm

    def prefill(prompts):
        computed.extend(("prefill", len(p)) for p in prompts)
        return real_prefill(prompts)

    def warm(tokens):
        computed.append(("slice", len(tokens) - executor.cached_prefix(tokens)))
        return real_warm(tokens)

    executor.prefill = prefill
    executor.warm = warm
    background = dataclasses.replace(GREEDY, max_new_tokens=8, background=True)
    part = scheduler.submit(long_ids, background)  # in line first
    asked = scheduler.submit(question, dataclasses.replace(GREEDY, max_new_tokens=8))
    scheduler.start()
    try:
        summary, answer = await asyncio.gather(collect(part), collect(asked))
        assert computed[0] == ("prefill", len(question)), computed  # the question went first
        slices = [n for what, n in computed if what == "slice"]
        if executor.can_warm:
            assert len(slices) >= len(long_ids) // WARM_SLICE - 1 and max(slices) <= WARM_SLICE, computed
            assert sum(slices) >= len(long_ids) - WARM_SLICE - 1, computed  # the join computed only the rest
        else:
            assert not slices
        cold = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cuda_max_batch=4, cpu_threads=2))
        cold.start()
        try:
            whole = await collect(cold.submit(long_ids, dataclasses.replace(background, background=False)))
        finally:
            await cold.shutdown(cancel=True)
        assert summary.text == whole.text and summary.final.completion_tokens == whole.final.completion_tokens
        assert answer.final.completion_tokens >= 1
    finally:
        await scheduler.shutdown(cancel=True)
