"""int8 layers: the decoder's linear layers and token embedding stored as int8 with one float32 scale per
output channel (per token row for the embedding), as ``scratchlm quantize`` writes them (``scratchlm.infer.
quantize``). ``apply_int8`` loads such a state dict into a freshly built model; the model folder loader calls
it for every folder whose config.json has a ``quantization`` section, so every verb runs int8 folders.

The int8 matrices run on one of two kernels (``SCRATCHLM_INT8_BACKEND=auto|fbgemm|torchao``):

* ``fbgemm`` (x86, the default where PyTorch ships it): dynamic int8 linear (``torch.ops.quantized.
  linear_dynamic``): activations quantized per call, int8 x int8 matmul with int32 accumulation.
* ``torchao``: the weights as torchao ``Int8Tensor`` (weight-only: dequantized in the matmul). Works on every
  machine torchao supports but is not faster than fp32 in eager mode; ``auto`` falls back to it, with a
  warning, where fbgemm is missing (e.g. ARM).

Neither available: loading fails with an error that says what to install or which fp32 model to use.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointError

BACKENDS = ("auto", "fbgemm", "torchao")
SCALE_SUFFIX = "_scale"


class QuantizationError(CheckpointError):
    """A model that cannot be quantized, or an int8 model this machine cannot run."""


def _fbgemm_available() -> bool:
    engines = torch.backends.quantized.supported_engines
    if not ({"fbgemm", "x86"} & set(engines)) or not hasattr(torch.ops.quantized, "linear_dynamic"):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FbgemmLinear(torch.ones(2, 4, dtype=torch.int8), torch.ones(2))(torch.ones(1, 4))
        return True
    except (RuntimeError, NotImplementedError):
        return False


def _torchao_available() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8Tensor  # noqa: F401
        return True
    except ImportError:
        return False


def choose_backend(requested: str | None = None, source: str = "") -> str:
    """The int8 kernel to use here: ``requested`` or ``$SCRATCHLM_INT8_BACKEND`` (default auto)."""
    requested = requested or os.environ.get("SCRATCHLM_INT8_BACKEND", "auto")
    if requested not in BACKENDS:
        raise QuantizationError(f"SCRATCHLM_INT8_BACKEND={requested!r}: choose one of {', '.join(BACKENDS)}")
    fp32 = f" or use the fp32 model ({source})" if source else ""
    if requested == "fbgemm":
        if not _fbgemm_available():
            raise QuantizationError(f"int8 backend fbgemm: this PyTorch build has no fbgemm/x86 quantized engine "
                                    f"(supported: {torch.backends.quantized.supported_engines}); set "
                                    f"SCRATCHLM_INT8_BACKEND=torchao (pip install torchao){fp32}")
        return "fbgemm"
    if requested == "torchao":
        if not _torchao_available():
            raise QuantizationError(f"int8 backend torchao: torchao is not installed (pip install torchao){fp32}")
        return "torchao"
    if _fbgemm_available():
        return "fbgemm"
    if _torchao_available():
        warnings.warn("int8 model: no fbgemm int8 kernel on this machine; running through torchao's weight-only "
                      "path (correct, but not faster than fp32)", RuntimeWarning, stacklevel=3)
        return "torchao"
    raise QuantizationError(f"int8 model: this machine has no int8 kernel (no fbgemm/x86 quantized engine in "
                            f"PyTorch, and torchao is not installed): pip install torchao{fp32}")


class _FbgemmLinear(nn.Module):
    """y = x W^T with W int8 per-channel and x quantized to uint8 per call (PyTorch's dynamic int8 linear)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        zeros = torch.zeros(qweight.shape[0], dtype=torch.long)
        q = torch._make_per_channel_quantized_tensor(qweight, scale.double(), zeros, 0)
        self._packed = torch.ops.quantized.linear_prepack(q, None)
        # the rows themselves, for the native decode engine (scratchlm.infer.engine), which reads int8 directly
        self.int8_weight = (qweight, scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, True).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 fbgemm"


def _torchao_linear(qweight: torch.Tensor, scale: torch.Tensor) -> nn.Linear:
    from torchao.quantization import Int8Tensor

    out_f, in_f = qweight.shape
    lin = nn.Linear(in_f, out_f, bias=False, device="meta")
    w = Int8Tensor(qweight, scale.reshape(-1, 1).float(), [1, in_f], torch.float32)
    lin.weight = nn.Parameter(w, requires_grad=False)
    lin.int8_weight = (qweight, scale.float())  # for the native decode engine
    return lin


class Int8Embedding(nn.Module):
    """Token embedding from int8 rows and one scale per token (the lookup dequantizes only the rows it reads)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        # not in the state dict: loaded from (and saved as) <path>.weight / <path>.weight_scale
        self.register_buffer("qweight", qweight, persistent=False)
        self.register_buffer("scale", scale.float(), persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # for code that counts parameters (num_params)
        return self.qweight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.qweight).float() * self.scale[idx].unsqueeze(-1)


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def apply_int8(model: nn.Module, tensors: dict[str, torch.Tensor], info: dict, folder: Path | str = "",
               backend: str | None = None) -> str:
    """Load an int8 state dict into a freshly built fp32 ``model`` (in place); returns the backend used."""
    if info.get("method") != "int8":
        raise QuantizationError(f"{folder}/config.json: quantization.method={info.get('method')!r} is not "
                                f"supported by this version (only int8)")
    backend = choose_backend(backend, info.get("source", ""))
    make = _FbgemmLinear if backend == "fbgemm" else _torchao_linear
    emb = info["embedding"]
    prefix = emb[:-len("embed")]
    quantized = [*info["modules"], emb]
    int8 = {}
    for path in quantized:
        q, s = tensors.get(f"{path}.weight"), tensors.get(f"{path}.weight{SCALE_SUFFIX}")
        if q is None or s is None or q.dtype != torch.int8:
            raise QuantizationError(f"{folder}/model.safetensors: '{path}.weight' is missing or not int8; the "
                                    f"file does not match its config.json quantization section")
        int8[path] = (q, s)
    rest = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[0] not in int8}
    own = model.state_dict()
    replaced = {f"{p}.weight" for p in quantized} | ({f"{prefix}lm_head.weight"} if info.get("tied_output") else set())
    missing = [k for k in own if k not in rest and k not in replaced]
    unexpected = [k for k in rest if k not in own]
    if missing or unexpected:
        raise QuantizationError(f"{folder}/model.safetensors does not match the model: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")
    model.load_state_dict(rest, strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's deprecation notice for quantized tensor creation
        for path in info["modules"]:
            _set(model, path, make(*int8[path]))
        _set(model, emb, Int8Embedding(*int8[emb]))
        if info.get("tied_output"):
            _set(model, f"{prefix}lm_head", make(*int8[emb]))
    for p in model.parameters():
        p.requires_grad_(False)
    return backend
