"""llama.cpp's own `llama-server`, the peer Parley's speed is measured against (bench only).

Built once from the very source release `make install` compiles llama-cpp-python from (its sdist
vendors llama.cpp, server included), with the same CPU flags (tools/llama_cpp_cmake_args.py),
and cached under `.cache/llama-server/<release>-<flags hash>/` (git-ignored): a CPU with other
flags builds its own. `make install` never builds it.

    .venv/bin/python bench/llama_server.py            # build (or find) it; prints its path
    .venv/bin/python bench/llama_server.py --version  # ...and the build's own version line

`LlamaServer` starts it on a free loopback port with one slot per user (`-np`), the same threads
and context per slot as Parley, flash attention on, and stops it; `stream_completion` sends one
request over its OpenAI-compatible HTTP API and times what a client sees.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from llama_cpp_cmake_args import cmake_args, cpu_flags  # noqa: E402

CACHE = ROOT / ".cache" / "llama-server"


def release() -> str:
    """The llama-cpp-python release `make install` builds (the Makefile's LLAMA_CPP_VERSION)."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("LLAMA_CPP_VERSION"):
            return line.split(":=")[1].strip()
    raise RuntimeError("LLAMA_CPP_VERSION is not in the Makefile")


def flags() -> list[str]:
    return cmake_args(cpu_flags(Path("/proc/cpuinfo").read_text()))


def binary_path() -> Path:
    key = hashlib.sha256(" ".join(flags()).encode()).hexdigest()[:12]
    return CACHE / f"{release()}-{key}" / "llama-server"


def build(log=sys.stderr) -> Path:
    """The cached binary for this release and CPU, built first when missing (~10 min on 2 cores)."""
    target = binary_path()
    if target.exists():
        return target
    source = _source(log)
    work = target.parent / "build"
    cmake = ["cmake", "-S", str(source), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
             "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DBUILD_SHARED_LIBS=OFF", *flags()]
    print("configuring llama-server:", " ".join(cmake), file=log)
    subprocess.run(cmake, check=True, stdout=subprocess.DEVNULL)
    print("building llama-server (minutes)", file=log)
    subprocess.run(["cmake", "--build", str(work), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.copy2(work / "bin" / "llama-server", target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def _source(log) -> Path:
    """llama.cpp as vendored by the llama-cpp-python sdist of this release (pip downloads it)."""
    sdists = CACHE / "src"
    sdists.mkdir(parents=True, exist_ok=True)
    name = f"llama_cpp_python-{release()}"
    tree = sdists / name
    if not tree.exists():
        archive = sdists / f"{name}.tar.gz"
        if not archive.exists():
            print(f"downloading the llama-cpp-python {release()} source release", file=log)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={release()}", "-d", str(sdists)], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(sdists, filter="data")
    return tree / "vendor" / "llama.cpp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """A running llama-server on `gguf`: `slots` parallel slots of `slot_context` tokens each."""

    def __init__(self, gguf: Path, *, slots: int, slot_context: int, threads: int, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [str(build()), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
                        "-np", str(slots), "-c", str(slots * slot_context), "-t", str(threads), "-tb", str(threads),
                        "-b", "2048", "-ub", "512", "-fa", "on", "--no-webui"]
        self._log = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}: {' '.join(self.command)}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if json.loads(resp.read()).get("status") == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("llama-server did not become ready")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Streamed:
    """What a client saw of one streamed answer (times from when it was sent)."""

    tokens: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0
    gaps: list[float] = field(default_factory=list)  # between consecutive pieces of text
    cached_tokens: int = 0  # prompt tokens the server served from its cache


async def stream_completion(session, url: str, prompt: list[int], tokens: int) -> Streamed:
    """One request to llama-server's /completion with the prompt as token ids, greedy, exactly
    `tokens` tokens (end of text ignored), streamed; timed as a client sees it."""
    body = {"prompt": prompt, "n_predict": tokens, "ignore_eos": True, "temperature": 0.0, "top_k": 1,
            "stream": True, "cache_prompt": True, "samplers": ["top_k"]}
    out = Streamed()
    sent = time.perf_counter()
    last = sent
    async with session.post(f"{url}/completion", json=body) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            now = time.perf_counter()
            if event.get("content"):
                out.tokens += 1
                if out.tokens == 1:
                    out.first_token_s = now - sent
                else:
                    out.gaps.append(now - last)
                last = now
            if event.get("stop"):
                out.cached_tokens = int((event.get("timings") or {}).get("cache_n", 0))
                out.tokens = int(event.get("tokens_predicted", out.tokens))
                break
    out.total_s = time.perf_counter() - sent
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="store_true", help="print the built server's version line")
    args = parser.parse_args()
    path = build()
    print(path)
    if args.version:
        subprocess.run([str(path), "--version"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

