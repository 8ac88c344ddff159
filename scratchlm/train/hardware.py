"""Device, precision and the measured matmul peak that MFU is reported against."""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")  # MPS is opt-in (train.device=mps): numerics there are not bit-stable


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices in hardware (AVX-512 BF16 or AMX).

    Without it PyTorch falls back to a scalar path far slower than fp32 (docs/results.md), so bf16 must never
    be chosen blindly."""
    cap = torch.backends.cpu.get_cpu_capability()
    if "AVX512" not in cap:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast compute dtype (weights and optimizer state stay fp32)."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def _peak_cache() -> Path:
    return Path(os.environ.get("SCRATCHLM_CACHE_DIR", Path.home() / ".cache" / "scratchlm")) / "matmul_peak.json"


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.5,
                        use_cache: bool = True) -> float:
    """Best sustained FLOP/s of an n x n matmul on this device and dtype (cached per machine).

    The cache keeps the best value ever measured: a measurement taken while other processes share the cores
    reads low, and a low peak would inflate every MFU computed from it (>100% was seen). A cached peak is
    still re-measured briefly, so it converges to the machine's real one."""
    key = f"{platform.node()}|{platform.processor() or platform.machine()}|{device.type}|{dtype}|" \
          f"{torch.get_num_threads()}|{n}"
    if device.type == "cuda":
        key += "|" + torch.cuda.get_device_name(device)
    cache = _peak_cache()
    cached = 0.0
    if use_cache and cache.exists():
        try:
            cached = float(json.loads(cache.read_text()).get(key, 0.0))
        except (OSError, ValueError, AttributeError):
            cached = 0.0
    if cached:
        seconds = min(seconds, 0.3)
    # A private generator: drawing from the global one would shift dropout masks after a resume (and make
    # a run depend on whether this measurement was cached), breaking bit-exact resumption.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, generator=gen).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        for _ in range(4 if device.type == "cuda" else 1):
            a @ b
        sync()
        dt = (time.perf_counter() - t) / (4 if device.type == "cuda" else 1)
        best = max(best, 2 * n**3 / dt)
    if use_cache and best > cached:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(cache.read_text()) if cache.exists() else {}
            data[key] = best
            cache.write_text(json.dumps(data, indent=1))
        except (OSError, ValueError):
            pass
    return max(best, cached)


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB.

    On Linux, VmHWM from /proc/self/status: ``getrusage``'s ``ru_maxrss`` survives ``exec``, so a worker
    started by a large parent (a benchmark running each form in its own process) would report the parent's
    peak as its own."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if platform.system() != "Darwin" else r / 2**20
