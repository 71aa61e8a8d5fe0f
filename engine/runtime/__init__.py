"""The LLM runtime: loading a model lineup's members, the continuous-batching scheduler and its
executors (llama.cpp, transformers), sampling, detokenizing, the CPU's facts, device-fault
recovery, and the local and remote backends behind one interface (backends.py). It never imports
the assistant's modules; torch, transformers and llama.cpp are imported only for a local model."""
