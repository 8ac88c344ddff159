"""The native decode engine: the decoder's forward pass over new tokens on a KV cache as one C call
(``csrc/decode.c``), for fp32 and int8 decoders on the CPU.

Why: a small decoder's batch-1 step is mostly PyTorch's per-op dispatch (~30 small ops per block), and int8
weights only pay when the GEMV reads them as int8. The C step runs a whole step in one OpenMP region with
GEMVs that read each weight row once for the whole batch; int8 rows are converted inside the dot product.

The library is compiled on first use with the machine's C compiler (``-O3 -march=native -fopenmp``) into
``$SCRATCHLM_CACHE_DIR`` (default ``~/.cache/scratchlm``)/engine/<hash of source, compiler and CPU>/, written
atomically. Where that fails (no compiler, another OS) the engine is off, with one warning, and generation
takes the PyTorch path (``decode_pack``), which gives the same tokens. ``SCRATCHLM_DECODE_ENGINE=torch`` turns
it off; ``=native`` makes a failure to build an error.

The engine reads the model's weights into its own "pack" (q/k rows in pair order, q/k/v and gate/up fused;
int8 layers keep their int8 rows and scales) once, and remakes it when a weight changes, like ``decode_pack``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
import weakref
from pathlib import Path

import torch
import torch.nn as nn

from ..model.transformer import KVCache, Transformer

SOURCE = Path(__file__).with_name("csrc") / "decode.c"
MODES = ("auto", "native", "torch")


class EngineError(RuntimeError):
    """The native engine was asked for (SCRATCHLM_DECODE_ENGINE=native) and cannot be built or loaded."""


class _Mat(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("scale", ctypes.c_void_p)]


class _Layer(ctypes.Structure):
    _fields_ = [("attn_norm", ctypes.c_void_p), ("mlp_norm", ctypes.c_void_p), ("qkv", _Mat), ("o", _Mat),
                ("gate_up", _Mat), ("down", _Mat)]


class _Model(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("n_layer", "n_head", "n_kv", "head_dim", "dim", "hidden", "vocab",
                                              "int8")] + [
        ("eps", ctypes.c_float), ("layers", ctypes.POINTER(_Layer)), ("embed", _Mat), ("head", _Mat),
        ("norm", ctypes.c_void_p), ("rope_cos", ctypes.c_void_p), ("rope_sin", ctypes.c_void_p),
        ("rope_len", ctypes.c_int32)]


_lock = threading.Lock()
# model -> (weights key, Pack); kept beside the model, not on it, so copying or pickling a model never meets the
# C struct (ctypes pointers cannot be copied)
_packs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lib: ctypes.CDLL | None = None
_lib_failed: str | None = None


def mode() -> str:
    m = os.environ.get("SCRATCHLM_DECODE_ENGINE", "auto")
    if m not in MODES:
        raise EngineError(f"SCRATCHLM_DECODE_ENGINE={m!r}: choose one of {', '.join(MODES)}")
    return m


def _cache_dir() -> Path:
    root = os.environ.get("SCRATCHLM_CACHE_DIR") or Path.home() / ".cache" / "scratchlm"
    return Path(root) / "engine"


def _cpu_id() -> str:
    # -march=native code must not run on another CPU that shares the home directory
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _build(cc: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        lib = Path(tmp) / out.name
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(lib), str(SOURCE), "-lm"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}")
        os.replace(lib, out)  # atomic: a concurrent build or an interrupted one never leaves half a library


def library() -> ctypes.CDLL | None:
    """The compiled engine, built on first use; None (after one warning) where it cannot be built."""
    global _lib, _lib_failed
    if _lib is not None or _lib_failed is not None:
        if _lib is None and mode() == "native":
            raise EngineError(_lib_failed)
        return _lib
    with _lock:
        if _lib is not None or _lib_failed is not None:
            return _lib
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        try:
            if cc is None:
                raise OSError("no C compiler found (cc, gcc or clang; or set CC)")
            version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
            key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + _cpu_id().encode()).hexdigest()[:16]
            path = _cache_dir() / key / "libscratchlm_decode.so"
            if not path.exists():
                _build(cc, path)
            lib = ctypes.CDLL(str(path))
            lib.sl_forward.restype = ctypes.c_int
            lib.sl_forward.argtypes = [ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_int]
            lib.sl_work_floats.restype = ctypes.c_size_t
            lib.sl_work_floats.argtypes = [ctypes.POINTER(_Model), ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                           ctypes.c_int]
            _lib = lib
        except (OSError, subprocess.SubprocessError) as e:
            _lib_failed = f"the native decode engine could not be built or loaded: {e}"
            if mode() == "native":
                raise EngineError(_lib_failed) from e
            warnings.warn(f"{_lib_failed}; decoding with PyTorch instead (same tokens, slower)", RuntimeWarning,
                          stacklevel=2)
    return _lib


def _int8_of(mod: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    return getattr(mod, "int8_weight", None)


class Pack:
    """The engine's copy of a model's weights, and the C struct that points into it."""

    def __init__(self, model: Transformer, int8: bool) -> None:
        cfg = model.cfg
        D = cfg.head_dim
        pairs = torch.stack([torch.arange(D // 2), torch.arange(D // 2, D)], dim=1).flatten()

        def rows(w: torch.Tensor, heads: int) -> torch.Tensor:  # rotate-half order -> pair order, per head
            return w.view(heads, D, -1)[:, pairs].reshape(heads * D, -1)

        def scale_rows(s: torch.Tensor, heads: int) -> torch.Tensor:
            return s.view(heads, D)[:, pairs].reshape(-1)

        keep: list[torch.Tensor] = []

        def mat(w: torch.Tensor, s: torch.Tensor | None = None) -> _Mat:
            w = w.contiguous()
            keep.append(w)
            if s is not None:
                s = s.float().contiguous()
                keep.append(s)
            return _Mat(w.data_ptr(), s.data_ptr() if s is not None else None)

        def weight(mod):  # (w, scale) of a linear layer: int8 rows + scales, or fp32 and None
            q = _int8_of(mod)
            return q if int8 else (mod.weight.detach(), None)

        def vec(t: torch.Tensor) -> int:
            t = t.detach().float().contiguous()
            keep.append(t)
            return t.data_ptr()

        layers = (_Layer * cfg.n_layer)()
        for i, b in enumerate(model.layers):
            a = b.attn
            (qw, qs), (kw, ks), (vw, vs) = weight(a.q_proj), weight(a.k_proj), weight(a.v_proj)
            qkv = torch.cat([rows(qw, a.n_head), rows(kw, a.n_kv_head), vw])
            qkv_s = torch.cat([scale_rows(qs, a.n_head), scale_rows(ks, a.n_kv_head), vs]) if int8 else None
            (gw, gs), (uw, us) = weight(b.mlp.gate_proj), weight(b.mlp.up_proj)
            gu_s = torch.cat([gs, us]) if int8 else None
            layers[i] = _Layer(vec(b.attn_norm.weight), vec(b.mlp_norm.weight), mat(qkv, qkv_s),
                               mat(*weight(a.o_proj)), mat(torch.cat([gw, uw]), gu_s), mat(*weight(b.mlp.down_proj)))
        if int8:
            ew, es = model.embed.qweight, model.embed.scale
            embed = mat(ew, es)
            head = embed if cfg.tie_embeddings else mat(*weight(model.lm_head))
        else:
            embed = mat(model.embed.weight.detach())
            head = embed if model.lm_head.weight is model.embed.weight else mat(model.lm_head.weight.detach())
        self.rope = (model.rope_cos, model.rope_sin)
        self.struct = _Model(cfg.n_layer, cfg.n_head, cfg.n_kv_head, D, cfg.n_embd, cfg.mlp_hidden,
                             cfg.vocab_size, int(int8), cfg.norm_eps, layers, embed, head, vec(model.norm.weight),
                             model.rope_cos.data_ptr(), model.rope_sin.data_ptr(), model.rope_cos.shape[0])
        self._layers, self._keep = layers, keep
        self.vocab = cfg.vocab_size

    def refresh_rope(self, model: Transformer) -> None:
        """The model grows its rotary tables for long position ids; point at the current ones."""
        if self.rope[0] is not model.rope_cos:
            self.rope = (model.rope_cos, model.rope_sin)
            self.struct.rope_cos, self.struct.rope_sin = model.rope_cos.data_ptr(), model.rope_sin.data_ptr()
            self.struct.rope_len = model.rope_cos.shape[0]


def _linears(model: Transformer) -> list[nn.Module]:
    mods = [model.lm_head]
    for b in model.layers:
        mods += [b.attn.q_proj, b.attn.k_proj, b.attn.v_proj, b.attn.o_proj, b.mlp.gate_proj, b.mlp.up_proj,
                 b.mlp.down_proj]
    return mods


def pack(model: Transformer) -> Pack | None:
    """The engine pack for ``model``, or None where the engine does not apply: engine off or unbuildable,
    training or autograd, not on the CPU, not float32, bias or LoRA layers, a mix of int8 and fp32 layers,
    tracing and export. The pack is cached on the model and remade when a weight changes."""
    if mode() == "torch" or model.training or torch.is_grad_enabled() or model.rope_cos.device.type != "cpu":
        return None
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return None
    mods = _linears(model)
    int8 = [_int8_of(m) is not None for m in mods]
    if any(int8):
        if not all(int8) or not hasattr(model.embed, "qweight"):
            return None
        is_int8 = True
        key = ("int8", id(model.embed))
    else:
        if any(type(m) is not nn.Linear or m.bias is not None or m.weight.dtype != torch.float32 for m in mods):
            return None
        if type(model.embed) is not nn.Embedding or model.embed.weight.dtype != torch.float32:
            return None
        is_int8 = False
        params = [m.weight for m in mods] + [model.embed.weight, model.norm.weight]
        params += [w for b in model.layers for w in (b.attn_norm.weight, b.mlp_norm.weight)]
        key = tuple((w.data_ptr(), w._version) for w in params)
    cached = _packs.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    if library() is None:
        return None
    with torch.no_grad():
        p = Pack(model, is_int8)
    _packs[model] = (key, p)
    return p


def forward(model: Transformer, p: Pack, ids: torch.Tensor, cache: KVCache, start: int,
            positions: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 logits (B, V) of each row's last token, after running ``ids`` (B, T) into cache columns
    start..start+T-1. ``positions`` (B, T) rotary positions (default start..start+T-1); ``valid`` (B, start+T)
    False = a padding key (default: none)."""
    lib = library()
    B, T = ids.shape
    if cache.k.dtype != torch.float32 or not cache.k.is_contiguous() or not cache.v.is_contiguous():
        cache.k, cache.v = cache.k.float().contiguous(), cache.v.float().contiguous()
    if positions is None:
        positions = torch.arange(start, start + T).expand(B, T)
    positions = positions.to(torch.long).contiguous()
    top = int(positions.max()) + 1
    if top > model.rope_cos.shape[0]:
        model._grow_rope(top)
    p.refresh_rope(model)
    ids = ids.to(torch.long).contiguous()
    if valid is not None:
        valid = valid[:, :start + T].to(torch.uint8).contiguous()
    threads = torch.get_num_threads()
    S = cache.k.shape[3]
    work = getattr(cache, "_engine_work", None)
    need = lib.sl_work_floats(ctypes.byref(p.struct), B, T, S, threads)
    if work is None or work.numel() < need:
        work = cache._engine_work = torch.empty(need, dtype=torch.float32)
    logits = torch.empty(B, p.vocab, dtype=torch.float32)
    rc = lib.sl_forward(ctypes.byref(p.struct), B, T, ids.data_ptr(), positions.data_ptr(), start,
                        valid.data_ptr() if valid is not None else None, cache.k.data_ptr(), cache.v.data_ptr(), S,
                        logits.data_ptr(), work.data_ptr(), threads)
    if rc != 0:
        raise ValueError(f"decode step out of range: columns {start}..{start + T - 1} of a cache of {S}, or a "
                         f"token id outside the vocabulary ({p.vocab})")
    return logits
