"""int8 models for CPU inference: ``scratchlm quantize --model DIR --method int8``.

What is quantized: every linear layer of the decoder blocks and the token embedding (with the output head
tied to it), symmetric int8 per output channel (per token row for the embedding), computed by torchao
(``Int8Tensor.from_hp``, ``PerRow`` granularity). Norms, the rotary tables and a classifier's small ``score``
layer stay float32. The folder is an ordinary scratchlm model folder (config.json, model.safetensors,
tokenizer, manifest): ``model.safetensors`` holds ``<layer>.weight`` as int8 and ``<layer>.weight_scale`` as
float32, and config.json a ``quantization`` section, so ``load_model`` / ``load_classifier`` (and every verb
built on them: generate, classify, translate, evaluate, serve) load it like any model.

At load time the int8 matrices run on one of two kernels (``SCRATCHLM_INT8_BACKEND=auto|fbgemm|torchao``):

* ``fbgemm`` (x86, the default where PyTorch ships it): dynamic int8 linear (``torch.ops.quantized.
  linear_dynamic``): activations quantized per call, int8 x int8 matmul with int32 accumulation.
* ``torchao``: the weights as torchao ``Int8Tensor`` (weight-only: dequantized in the matmul). Works on every
  machine torchao supports but is not faster than fp32 in eager mode; ``auto`` falls back to it, with a
  warning, where fbgemm is missing (e.g. ARM).

Neither available: loading fails with an error that says what to install or which fp32 model to use.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .train import checkpoint as ckpt

METHODS = ("int8",)
BACKENDS = ("auto", "fbgemm", "torchao")
SCALE_SUFFIX = "_scale"


class QuantizationError(ckpt.CheckpointError):
    """A model that cannot be quantized, or an int8 model this machine cannot run."""


# ---- quantizing ------------------------------------------------------------------------------------------
def int8_per_row(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per row) of ``w`` by torchao: symmetric, one scale per output channel."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import Int8Tensor
            from torchao.quantization.granularity import PerRow
    except ImportError as e:
        raise QuantizationError("int8 quantization needs torchao: pip install torchao") from e
    t = Int8Tensor.from_hp(w.detach().float().cpu(), granularity=PerRow())
    return t.qdata.contiguous(), t.scale.reshape(-1).float().contiguous()


def _quantized_modules(model: nn.Module) -> list[str]:
    """Paths of the linear layers to quantize: every nn.Linear of the decoder blocks (not the output heads)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{name}"]


def _embedding_path(model: nn.Module) -> str:
    return "backbone.embed" if hasattr(model, "backbone") else "embed"


def quantize_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """The int8 state dict of a loaded fp32 model (Transformer or SequenceClassifier) and its description."""
    state = ckpt.model_state(model)
    linears = _quantized_modules(model)
    emb = _embedding_path(model)
    backbone = model.backbone if hasattr(model, "backbone") else model
    tied = backbone.lm_head.weight is backbone.embed.weight
    untied_head = [] if tied or hasattr(model, "backbone") else ["lm_head"]
    for path in [*linears, emb, *untied_head]:
        q, s = int8_per_row(state[f"{path}.weight"])
        state[f"{path}.weight"] = q
        state[f"{path}.weight{SCALE_SUFFIX}"] = s
    info = {"method": "int8", "weights": "int8, symmetric, one scale per output channel (per token for the "
            "embedding)", "activations": "int8 dynamic (fbgemm) or float32 (torchao weight-only)",
            "library": "torchao", "modules": [*linears, *untied_head], "embedding": emb, "tied_output": tied}
    try:
        import torchao

        info["torchao_version"] = torchao.__version__
    except ImportError:
        pass
    return state, info


def quantize_folder(path: str | Path, out: str | Path, method: str = "int8") -> Path:
    """Quantize the model folder ``path`` into a new folder ``out``; returns ``out``."""
    if method not in METHODS:
        raise QuantizationError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    folder = ckpt.resolve(path)
    config = ckpt.read_config(folder)
    if config.get("quantization"):
        q = config["quantization"]
        raise QuantizationError(f"{folder} is already quantized (config.json quantization.method="
                                f"{q.get('method')!r}); quantize the fp32 model it came from "
                                f"({q.get('source', 'unknown')}) instead")
    model, tokenizer = _load_fp32(folder, config)
    state, info = quantize_state(model)
    info["source"] = str(folder)
    out_config = {**config, "quantization": info}
    extra = {}
    if (folder / "source.json").exists():
        extra["source.json"] = json.loads((folder / "source.json").read_text("utf-8"))
    return ckpt.save_checkpoint(Path(out), model_tensors=state, config=out_config, tokenizer=tokenizer,
                                extra_files=extra)


def _load_fp32(folder: Path, config: dict):
    task = config.get("task") or "lm"
    if task == "classify":
        if config.get("kind") != "decoder":
            raise QuantizationError(f"{folder}/config.json: kind={config.get('kind')!r}: int8 quantization is for "
                                    f"decoder models (the classical and recurrent baselines are not quantized)")
        from .classify import load_classifier

        loaded = load_classifier(folder)
        return loaded.model, loaded.tokenizer
    if config.get("kind") in ("gru", "lstm"):
        raise QuantizationError(f"{folder}/config.json: kind={config.get('kind')!r}: int8 quantization is for "
                                f"decoder models")
    from .model.io import load_model

    loaded = load_model(folder)
    return loaded.model, loaded.tokenizer


# ---- running ---------------------------------------------------------------------------------------------
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


def is_quantized(config: dict) -> bool:
    return bool(config.get("quantization"))


# ---- command line (the parser is scratchlm.export.cli.add_quantize_parser: no torch import to build it) ----
def cmd_quantize(args, extra=None) -> int:
    src = ckpt.resolve(args.model)
    out = Path(args.out) if args.out else src.with_name(f"{src.name}-{args.method}")
    folder = quantize_folder(src, out, args.method)
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    print(f"wrote {folder} ({size(folder) / 1e6:.2f} MB, fp32 {size(src) / 1e6:.2f} MB: "
          f"{size(src) / size(folder):.2f}x smaller); int8 kernel here: {choose_backend(None, str(src))}")
    return 0
