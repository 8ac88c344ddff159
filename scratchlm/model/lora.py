"""LoRA (low-rank adaptation) injected into a model's own ``nn.Linear`` layers, with PEFT's conventions.

``inject_lora`` replaces each targeted ``nn.Linear`` in place by a ``LoraLinear`` that keeps the original
layer as ``base_layer`` (frozen) and adds ``lora_B(lora_A(dropout(x))) * lora_alpha / r``; no second copy
of the model is made. ``lora_A`` starts Kaiming-uniform and ``lora_B`` at zero, so a freshly injected model
computes exactly what the base model did.

Adapters are saved the way PEFT saves them: ``adapter_config.json`` (``peft_type: "LORA"``, ``r``,
``lora_alpha``, ...) and ``adapter_model.safetensors`` with keys
``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight``; parameters of ``modules_to_save``
are stored as ``base_model.model.<module path>.<param name>`` (PEFT strips its ``modules_to_save.<adapter>``
wrapper from the key). The module paths are this project's (``layers.0.attn.q_proj``), so the files load
back into a scratchlm model, not into a Hugging Face one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoint import CheckpointError, write_json_atomic

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
TASK_TYPES = ("CAUSAL_LM", "SEQ_CLS")
ALL_LINEAR = "all-linear"
OUTPUT_LAYERS = ("lm_head", "score")  # never targeted by "all-linear" (PEFT excludes the output layer)
SEQ_CLS_MODULES = ("classifier", "score")  # PEFT adds these to modules_to_save for SEQ_CLS


class AdapterError(CheckpointError):
    """An adapter folder that is missing, malformed, or does not fit the model it is loaded into."""


@dataclass
class LoraConfig:
    r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    # module names, matched against the end of the module path ("q_proj" or "attn.q_proj"), or "all-linear"
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])
    modules_to_save: list[str] = field(default_factory=list)  # trained in full and saved with the adapter
    task_type: str = "CAUSAL_LM"

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    @property
    def all_linear(self) -> bool:
        t = self.target_modules
        return t == ALL_LINEAR or (not isinstance(t, str) and list(t) == [ALL_LINEAR])

    def effective_modules_to_save(self) -> list[str]:
        """modules_to_save, plus ``classifier``/``score`` for SEQ_CLS (as PEFT does)."""
        out = list(self.modules_to_save)
        if self.task_type == "SEQ_CLS":
            out += [m for m in SEQ_CLS_MODULES if m not in out]
        return out

    def validate(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"lora.r must be a positive integer, got {self.r!r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora.lora_alpha must be positive, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.task_type not in TASK_TYPES:
            raise ValueError(f"lora.task_type must be one of {', '.join(TASK_TYPES)}, got {self.task_type!r}")
        targets = self.target_modules
        if isinstance(targets, str):
            if targets != ALL_LINEAR:
                raise ValueError(f"lora.target_modules must be a list of module names or '{ALL_LINEAR}', "
                                 f"got {targets!r}")
        else:
            targets = list(targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ValueError(f"lora.target_modules must be a non-empty list of module names, got {targets!r}")
        if isinstance(self.modules_to_save, str) or not all(isinstance(m, str) and m for m in self.modules_to_save):
            raise ValueError(f"lora.modules_to_save must be a list of module names, got {self.modules_to_save!r}")
        if not self.all_linear:
            both = sorted(set(targets) & set(self.modules_to_save))
            if both:
                raise ValueError(f"modules {both} are both LoRA targets and in modules_to_save; choose one")

    # ---- PEFT adapter_config.json ------------------------------------------------------------
    def to_peft_dict(self, target_modules: list[str] | None = None,
                     base_model_name_or_path: str | None = None) -> dict:
        targets = target_modules if target_modules is not None else self.target_modules
        return {
            "peft_type": "LORA",
            "task_type": self.task_type,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": targets if isinstance(targets, str) else list(targets),
            "bias": "none",
            "modules_to_save": self.effective_modules_to_save() or None,
            "base_model_name_or_path": base_model_name_or_path,
            "fan_in_fan_out": False,
            "inference_mode": True,
            "init_lora_weights": True,
            "use_rslora": False,
            "use_dora": False,
            "rank_pattern": {},
            "alpha_pattern": {},
            "layers_to_transform": None,
            "layers_pattern": None,
            "revision": None,
        }

    @classmethod
    def from_peft_dict(cls, d: dict, source: str = ADAPTER_CONFIG) -> LoraConfig:
        if d.get("peft_type") != "LORA":
            raise AdapterError(f"{source}: peft_type is {d.get('peft_type')!r}, only 'LORA' is supported")
        unsupported = [
            (d.get("bias", "none") != "none", f"bias={d.get('bias')!r} (only 'none')"),
            (bool(d.get("use_rslora")), "use_rslora"),
            (bool(d.get("use_dora")), "use_dora"),
            (bool(d.get("fan_in_fan_out")), "fan_in_fan_out"),
            (bool(d.get("rank_pattern")), "rank_pattern"),
            (bool(d.get("alpha_pattern")), "alpha_pattern"),
            (d.get("layers_to_transform") is not None, "layers_to_transform"),
        ]
        bad = [what for cond, what in unsupported if cond]
        if bad:
            raise AdapterError(f"{source}: unsupported LoRA options {bad}")
        missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in d]
        if missing:
            raise AdapterError(f"{source}: missing fields {missing}")
        targets = d["target_modules"]
        cfg = cls(r=d["r"], lora_alpha=d["lora_alpha"], lora_dropout=d.get("lora_dropout") or 0.0,
                  target_modules=targets if isinstance(targets, str) else list(targets),
                  modules_to_save=list(d.get("modules_to_save") or []),
                  task_type=d.get("task_type") or "CAUSAL_LM")
        try:
            cfg.validate()
        except ValueError as e:
            raise AdapterError(f"{source}: {e}") from e
        return cfg


class LoraLinear(nn.Module):
    """``base_layer(x) + lora_B(lora_A(dropout(x))) * scaling``; the base layer is frozen.

    ``merge()`` adds ``lora_B.weight @ lora_A.weight * scaling`` into the base weight in place and makes
    forward skip the low-rank path; ``unmerge()`` subtracts it again (exact up to float rounding)."""

    def __init__(self, base_layer: nn.Linear, r: int, lora_alpha: float, lora_dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"LoraLinear wraps nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self._base_requires_grad = base_layer.weight.requires_grad
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r = r
        self.lora_alpha = lora_alpha
        self.scaling = lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        w = base_layer.weight
        # half-precision bases get float32 adapters (PEFT's autocast_adapter_dtype)
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=w.device, dtype=dtype)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=w.device, dtype=dtype)
        self.merged = False
        self.reset_lora_parameters()
        self.train(base_layer.training)  # injected into an eval() model, the adapter's dropout stays off

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as PEFT (init_lora_weights=True)
        nn.init.zeros_(self.lora_B.weight)

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        w = self.base_layer.weight
        w.copy_((w.to(self.lora_A.weight.dtype) + self.delta_weight()).to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        w = self.base_layer.weight
        w.copy_((w.to(self.lora_A.weight.dtype) - self.delta_weight()).to(w.dtype))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        a = self.lora_A.weight
        lora = self.lora_B(self.lora_A(self.lora_dropout(x).to(a.dtype))) * self.scaling
        return result + lora.to(result.dtype)

    def extra_repr(self) -> str:
        return f"r={self.r}, lora_alpha={self.lora_alpha}, scaling={self.scaling:g}, merged={self.merged}"


# ---- module discovery ------------------------------------------------------------------------
def _matches(path: str, names: Iterable[str]) -> bool:
    """PEFT's rule: the module path equals a name or ends with '.' + name."""
    return any(path == n or path.endswith("." + n) for n in names)


def lora_modules(model: nn.Module) -> dict[str, LoraLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def _inside(path: str, prefixes: Iterable[str]) -> bool:
    return any(path.startswith(p + ".") for p in prefixes)


def _shared_parameter_ids(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def find_targets(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Paths of the nn.Linear modules ``cfg`` targets (none inside an already injected LoraLinear)."""
    injected = list(lora_modules(model))
    out = []
    for name, m in model.named_modules():
        if not name or not isinstance(m, nn.Linear) or name in injected or _inside(name, injected):
            continue
        if cfg.all_linear:
            if name.rsplit(".", 1)[-1] not in OUTPUT_LAYERS:
                out.append(name)
        elif _matches(name, cfg.target_modules):
            out.append(name)
    return out


# ---- public API --------------------------------------------------------------------------------
def inject_lora(model: nn.Module, cfg: LoraConfig, *, freeze: bool = True) -> list[str]:
    """Replace every targeted ``nn.Linear`` of ``model`` by a ``LoraLinear``, in place.

    Returns the replaced module paths. With ``freeze`` (the default, as PEFT's ``get_peft_model``) every
    parameter except the LoRA matrices and ``cfg.effective_modules_to_save()`` is frozen."""
    cfg.validate()
    targets = find_targets(model, cfg)
    if not targets:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and n})
        already = f"; the model already has {len(lora_modules(model))} LoRA layers" if lora_modules(model) else ""
        raise ValueError(f"LoRA target_modules {cfg.target_modules!r} matched no nn.Linear in "
                         f"{type(model).__name__} (its linear layers are named {linear}){already}")
    shared = _shared_parameter_ids(model)
    tied = [t for t in targets if id(model.get_submodule(t).weight) in shared]
    if tied:
        raise ValueError(f"cannot put LoRA on {tied}: their weight is shared with another module (tied "
                         f"embeddings), and merging would change both")
    for path in targets:
        _set_submodule(model, path, LoraLinear(model.get_submodule(path), cfg.r, cfg.lora_alpha, cfg.lora_dropout))
    if freeze:
        mark_only_lora_trainable(model, extra_trainable=cfg.effective_modules_to_save())
    return targets


def mark_only_lora_trainable(model: nn.Module, extra_trainable: Iterable[str] = ()) -> None:
    """Freeze everything but the LoRA matrices and the modules named in ``extra_trainable`` (matched like
    target_modules, e.g. ``["score"]``); base biases stay frozen (PEFT's ``bias="none"``)."""
    extra = list(extra_trainable or ())
    for p in model.parameters():
        p.requires_grad_(False)
    for m in lora_modules(model).values():
        m.lora_A.weight.requires_grad_(True)
        m.lora_B.weight.requires_grad_(True)
    if extra:
        for name, m in model.named_modules():
            if name and _matches(name, extra):
                for p in m.parameters():
                    p.requires_grad_(True)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base weight and put the plain ``nn.Linear`` back in its place
    (PEFT's ``merge_and_unload``). The model's state dict then has the original, adapter-free keys."""
    for path, m in lora_modules(model).items():
        m.merge()
        base = m.base_layer
        for p in base.parameters():
            p.requires_grad_(m._base_requires_grad)
        _set_submodule(model, path, base)
    return model


def unmerge_all(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.unmerge()


def merge_all(model: nn.Module) -> None:
    """``merge()`` every LoRA layer in place (undo with ``unmerge_all``)."""
    for m in lora_modules(model).values():
        m.merge()


def _modules_to_save_state(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    names = list(names)
    out: dict[str, torch.Tensor] = {}
    if not names:
        return out
    for path, m in model.named_modules():
        if not path or not _matches(path, names):
            continue
        for pname, p in m.named_parameters():
            if ".lora_A." in f".{pname}" or ".lora_B." in f".{pname}":
                continue
            out[f"{path}.{pname}"] = p
    return out


def lora_state_dict(model: nn.Module, modules_to_save: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT key names (detached; the live tensors, not copies)."""
    out: dict[str, torch.Tensor] = {}
    for path, m in lora_modules(model).items():
        out[f"{PEFT_PREFIX}{path}.lora_A.weight"] = m.lora_A.weight.detach()
        out[f"{PEFT_PREFIX}{path}.lora_B.weight"] = m.lora_B.weight.detach()
    for key, p in _modules_to_save_state(model, modules_to_save).items():
        out[PEFT_PREFIX + key] = p.detach()
    return out


def _saved_target_modules(model: nn.Module, cfg: LoraConfig) -> list[str]:
    if not cfg.all_linear:
        return list(cfg.target_modules)
    # PEFT writes the names "all-linear" resolved to, so a reload targets exactly these layers
    return sorted({p.rsplit(".", 1)[-1] for p in lora_modules(model)})


def save_adapter(model: nn.Module, cfg: LoraConfig, folder: str | Path, *,
                 base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT layout) into ``folder``."""
    folder = Path(folder)
    modules = lora_modules(model)
    if not modules:
        raise ValueError("the model has no LoRA layers to save (call inject_lora first)")
    if any(m.merged for m in modules.values()):
        raise ValueError("the LoRA layers are merged into the base weights; unmerge them before saving")
    folder.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share memory (e.g. tied weights in modules_to_save)
    tensors = {k: v.to("cpu").contiguous().clone()
               for k, v in lora_state_dict(model, cfg.effective_modules_to_save()).items()}
    tmp = folder / f".{ADAPTER_WEIGHTS}.tmp-{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / ADAPTER_WEIGHTS)
    write_json_atomic(folder / ADAPTER_CONFIG,
                      cfg.to_peft_dict(_saved_target_modules(model, cfg), base_model_name_or_path))
    return folder


def read_adapter_config(folder: str | Path) -> LoraConfig:
    path = Path(folder) / ADAPTER_CONFIG
    try:
        d = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as e:
        raise AdapterError(f"{path} not found: {folder} is not a LoRA adapter folder") from e
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path} is not valid JSON: {e}") from e
    return LoraConfig.from_peft_dict(d, str(path))


def load_adapter(model: nn.Module, folder: str | Path, *, freeze: bool = True) -> LoraConfig:
    """Inject the adapter saved in ``folder`` into ``model`` (in place) and load its weights.

    A model that already has LoRA layers (e.g. the one the adapter was trained on) is reused if its layers
    are exactly the adapter's targets with the same r and alpha. Raises ``AdapterError`` naming the
    mismatch when the adapter does not fit the model (targets, key names or shapes)."""
    folder = Path(folder)
    cfg = read_adapter_config(folder)
    existing = lora_modules(model)
    if existing:
        not_injected = find_targets(model, cfg)
        foreign = [p for p in existing if not (cfg.all_linear or _matches(p, cfg.target_modules))]
        if not_injected or foreign:
            raise AdapterError(f"the model already has LoRA layers, but not the adapter's (target_modules "
                               f"{cfg.target_modules!r}): missing {not_injected[:4]}, extra {foreign[:4]}")
        bad = [p for p, m in existing.items() if (m.r, m.lora_alpha) != (cfg.r, cfg.lora_alpha)]
        if bad:
            raise AdapterError(f"LoRA layers {bad[:4]} have a different r/lora_alpha than the adapter "
                               f"(r={cfg.r}, lora_alpha={cfg.lora_alpha})")
        if any(m.merged for m in existing.values()):
            raise AdapterError("the model's LoRA layers are merged; unmerge them before loading an adapter")
        if freeze:
            mark_only_lora_trainable(model, extra_trainable=cfg.effective_modules_to_save())
    else:
        try:
            inject_lora(model, cfg, freeze=freeze)
        except ValueError as e:
            raise AdapterError(f"adapter {folder} does not fit the model: {e}") from e
    path = folder / ADAPTER_WEIGHTS
    try:
        saved = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise AdapterError(f"cannot read {path}: {e}") from e
    own = lora_state_dict(model, cfg.effective_modules_to_save())
    missing = sorted(k for k in own if k not in saved)
    unexpected = sorted(k for k in saved if k not in own)
    if missing or unexpected:
        raise AdapterError(f"adapter weights in {path} do not match the model's LoRA layers: missing "
                           f"{missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected "
                           f"{unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")
    wrong = [f"{k}: {tuple(saved[k].shape)} in the adapter, {tuple(own[k].shape)} in the model"
             for k in own if saved[k].shape != own[k].shape]
    if wrong:
        raise AdapterError(f"adapter {path} has tensors of the wrong shape (different r or model size): "
                           + "; ".join(wrong[:3]))
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(saved[k].to(device=t.device, dtype=t.dtype))
    return cfg


def count_trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied weight counts once."""
    trainable = total = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def trainable_summary(model: nn.Module) -> str:
    trainable, total = count_trainable_parameters(model)
    return (f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}")
