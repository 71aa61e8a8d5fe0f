"""The LLM runtime: loading a model lineup's members, the continuous-batching scheduler and its
executors (llama.cpp, transformers), sampling, detokenizing, the CPU's facts, device-fault
recovery, and the local and remote backends behind one interface. It never imports the
assistant's modules (only engine.config and engine.errors); torch, transformers and llama.cpp are
imported only for a local model.

Its public face, what the assistant uses:
- backends.py: `Backend`, the protocol of one lineup model ready to answer (count_tokens,
  encode_chat, submit, describe, scheduler_snapshot, set_max_batch, shutdown);
  `open_backend(cfg, scheduler, loader=, on_fault=)` makes one for a lineup entry (LocalBackend
  or remote.RemoteBackend); `load_local_model`, the default `ModelLoader`.
- generation.py: what goes in and comes out: `SamplingParams`, the `GenerationStream` that submit
  returns, its events `GenQueued`, `GenText`, `GenFinished` (a failure raises engine.errors'
  ParleyError).
- recovery.py: what happens after a device fault. cpu.py: the thread counts for generation and
  embedding.

Inside: executor.py holds the two protocols the scheduler runs on, `LocalModel` (a loaded model:
torch_model.LoadedModel, gguf_model.GGUFModel; loading.py picks which) and `Executor` (its model
work: torch_executor.py, llama_executor.py); scheduler.py plans, with requests.py, sampling.py,
detokenize.py, kvbatch.py; model_files.py finds the weights; llama_weights.py and
thread_governor.py tune llama.cpp on this CPU.
"""
