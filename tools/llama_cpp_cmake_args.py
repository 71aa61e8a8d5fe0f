"""CMake arguments for building llama.cpp (llama-cpp-python) for the CPU of this machine.

`GGML_NATIVE=ON` (llama.cpp's default) lets the compiler use every instruction the CPU reports,
AMX included; on the Intel machines of this project the AMX tile instructions die with SIGILL
under the hypervisor. So the build names each instruction set it may use, read from
/proc/cpuinfo, and always leaves AMX out. Printed on one line for `CMAKE_ARGS`.

    CMAKE_ARGS="$(python tools/llama_cpp_cmake_args.py)" pip install llama-cpp-python
"""
from __future__ import annotations

import sys
from pathlib import Path

# ggml option -> the /proc/cpuinfo flag that allows it
OPTIONS = {
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_BMI2": "bmi2",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}
FIXED = [
    "-DGGML_NATIVE=OFF",
    "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",  # SIGILL under the hypervisor
    # OpenMP's pool persists between graphs (ggml's own spawns threads at every llama_decode): one
    # sequence decodes 1.7x faster on 2 cores. It is the libgomp torch loads (same soname).
    "-DGGML_OPENMP=ON",
    "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",  # not used: faster build
]


def cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args(flags: set[str]) -> list[str]:
    chosen = [f"-D{option}={'ON' if flag in flags else 'OFF'}" for option, flag in OPTIONS.items()]
    return FIXED + chosen


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "/proc/cpuinfo")
    print(" ".join(cmake_args(cpu_flags(path.read_text()))))
