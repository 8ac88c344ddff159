"""Export to ONNX, run with ONNX Runtime on CPU, and an int8 variant through ONNX Runtime's quantizer.

Language models get a graph with KV-cache inputs and outputs, in the names Hugging Face Optimum uses:

    inputs   input_ids (B, T) int64, attention_mask (B, P+T) int64 (1 = real token), position_ids (B, T) int64,
             past_key_values.{i}.key / .value (B, n_kv_head, P, head_dim) float32, P may be 0
    outputs  logits (B, T, vocab) float32, present.{i}.key / .value (B, n_kv_head, P+T, head_dim)

The graph is traced through our own ``Transformer.forward`` (the cache is a stand-in that concatenates the
past with the new keys/values), so it computes what our model computes. Classifiers get
``input_ids, attention_mask -> logits (B, num_labels)``, any padding side.

``quantize_onnx`` writes ``model.int8.onnx``: ONNX Runtime dynamic quantization (int8 weights, per-channel,
int8 activations quantized at run time).
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..infer.generate import causal_padding_mask
from ..model.heads import padded_attention_mask, pool
from ..model.transformer import Transformer
from .common import ExportSource, check_exportable, resolve_lora

OPSET = 18
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
EXTERNAL_DATA_BYTES = 1 << 30  # above this the weights go to model.onnx.data (protobuf's 2 GB limit)


class _ConcatCache:
    """Duck-typed ``KVCache`` for tracing: returns past + new keys/values and records them as outputs."""

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.past = past
        self.present: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(past)
        self.pos = 0  # unused: position_ids are always given

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pk, pv = self.past[layer]
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.present[layer] = (k, v)
        return k, v


@contextlib.contextmanager
def _static_rope(model: Transformer):
    """Trace-friendly rope: a plain gather from the precomputed table (no data-dependent table growth)."""

    def rope(T, start=0, position_ids=None):
        return model.rope_cos[position_ids].unsqueeze(1), model.rope_sin[position_ids].unsqueeze(1)

    model.rope = rope
    try:
        yield
    finally:
        del model.rope


class CausalLMWithPast(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)`` over a Transformer."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, past_key_values):
        past = [(past_key_values[2 * i], past_key_values[2 * i + 1]) for i in range(len(past_key_values) // 2)]
        start = attention_mask.shape[1] - input_ids.shape[1]
        mask = causal_padding_mask(attention_mask.bool(), start)
        cache = _ConcatCache(past)
        hidden = self.model(input_ids, position_ids=position_ids, mask=mask, cache=cache)
        logits = self.model.lm_head(hidden)
        return (logits, *[t for kv in cache.present for t in kv])


class ClassifierLogits(nn.Module):
    """``forward(input_ids, attention_mask) -> logits``: the SequenceClassifier on its general (masked) path."""

    def __init__(self, classifier) -> None:
        super().__init__()
        self.clf = classifier

    def forward(self, input_ids, attention_mask):
        real = attention_mask.bool()
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.clf.backbone(input_ids, position_ids=position_ids, mask=padded_attention_mask(real))
        return self.clf.head(pool(hidden, real, self.clf.pooling))


def _io_names(n_layer: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def _bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_shapes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True, optimize=True,
                          verbose=False, external_data=_bytes(module) > EXTERNAL_DATA_BYTES)
    import onnx

    onnx.checker.check_model(str(path))


def export_onnx(src: ExportSource, out: str | Path, *, lora: str | None = None, int8: bool = False) -> dict:
    """Write ``out/model.onnx`` (+ ``model.int8.onnx`` with ``int8``), the tokenizer and ``export.json``."""
    check_exportable(src, "onnx")
    resolve_lora(src, "onnx", lora)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILE
    backbone = src.backbone
    cfg = backbone.cfg
    B, T, P = 2, 3, 2
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    model = src.model.float().eval()
    auto = torch.export.Dim.AUTO
    if src.is_classifier:
        mask = torch.ones(B, T, dtype=torch.long)
        shapes = {"input_ids": {0: auto, 1: auto}, "attention_mask": {0: auto, 1: auto}}
        with _static_rope(backbone):
            _export(ClassifierLogits(model), (ids, mask), path, ["input_ids", "attention_mask"], ["logits"], shapes)
        io = {"inputs": ["input_ids", "attention_mask"], "outputs": ["logits"]}
    else:
        past = tuple(torch.randn(B, cfg.n_kv_head, P, cfg.head_dim) for _ in range(2 * cfg.n_layer))
        mask = torch.ones(B, P + T, dtype=torch.long)
        pos = torch.arange(P, P + T).expand(B, T).contiguous()
        inputs, outputs = _io_names(cfg.n_layer)
        shapes = {"input_ids": {0: auto, 1: auto}, "attention_mask": {0: auto, 1: auto},
                  "position_ids": {0: auto, 1: auto}, "past_key_values": tuple({0: auto, 2: auto} for _ in past)}
        with _static_rope(backbone):
            _export(CausalLMWithPast(model), (ids, mask, pos, past), path, inputs, outputs, shapes)
        io = {"inputs": inputs, "outputs": outputs}
    src.tokenizer.save(out)
    meta = {"format": "onnx", "task": src.task, "opset": OPSET, "n_layer": cfg.n_layer, "n_kv_head": cfg.n_kv_head,
            "head_dim": cfg.head_dim, "vocab_size": cfg.vocab_size, "block_size": cfg.block_size,
            "bos_id": src.tokenizer.bos_id, "eos_id": src.tokenizer.eos_id, "pad_id": src.tokenizer.pad_id, **io}
    if src.is_classifier:
        meta.update(label_names=src.model.label_names, pooling=src.model.pooling,
                    max_length=src.config.get("max_length"), head_fraction=src.config.get("head_fraction"),
                    clean=src.config.get("clean"))
    files = [str(path)]
    if int8:
        files.append(str(quantize_onnx(path, out / INT8_FILE)))
    meta["files"] = [Path(f).name for f in files]
    (out / "export.json").write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
    notes = ["run with onnxruntime (CPU): scratchlm.export.onnx.OnnxCausalLM / OnnxClassifier, or any client that "
             "feeds the inputs listed in export.json"]
    if src.is_classifier:
        notes.append("inputs are <|eos|> text <|eos|> token ids (right or left padded) with attention_mask")
    return {"format": "onnx", "path": str(path), "files": files, "load": "onnxruntime.InferenceSession("
            f"{str(path)!r}, providers=['CPUExecutionProvider'])", "notes": notes}


def quantize_onnx(model_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime dynamic int8 quantization (per-channel int8 weights) of an exported graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(model_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True)
    return Path(out_path)


# ---- running the exported graph -------------------------------------------------------------------------
def _session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxCausalLM:
    """A language-model graph on ONNX Runtime: full-sequence logits and greedy KV-cache decoding."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _session(path, threads)
        self.meta = json.loads((self.path.parent / "export.json").read_text("utf-8"))

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        m = self.meta
        shape = (batch, m["n_kv_head"], 0, m["head_dim"])
        return {n: np.zeros(shape, dtype=np.float32) for n in m["inputs"][3:]}

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64),
                 "position_ids": position_ids.astype(np.int64), **past}
        outs = self.session.run(None, feeds)
        present = {n.replace("present.", "past_key_values."): o for n, o in zip(self.meta["outputs"][1:], outs[1:])}
        return outs[0], present

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """(B, T, V) logits of unpadded sequences, no cache."""
        B, T = input_ids.shape
        pos = np.broadcast_to(np.arange(T), (B, T))
        return self.forward(input_ids, np.ones((B, T), np.int64), pos, self._empty_past(B))[0]

    def generate_greedy(self, prompts: list[list[int]], max_new_tokens: int, *,
                        stop_at_eos: bool = True) -> tuple[list[list[int]], dict]:
        """Greedy continuations (left-padded batch, KV cache). Returns (tokens per row, timings)."""
        B, longest = len(prompts), max(len(p) for p in prompts)
        pad = self.meta["pad_id"]
        ids = np.full((B, longest), pad, np.int64)
        valid = np.zeros((B, longest), np.int64)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p):] = p
            valid[i, longest - len(p):] = 1
        pos = np.clip(valid.cumsum(1) - 1, 0, None)
        t0 = time.perf_counter()
        logits, past = self.forward(ids, valid, pos, self._empty_past(B))
        prefill = time.perf_counter() - t0
        out: list[list[int]] = [[] for _ in prompts]
        done = [False] * B
        eos = self.meta["eos_id"]
        next_pos = pos[:, -1] + 1
        t1 = time.perf_counter()
        for step in range(max_new_tokens):
            tok = logits[:, -1].argmax(-1)
            for i, t in enumerate(tok.tolist()):
                if not done[i]:
                    if stop_at_eos and t == eos:
                        done[i] = True
                    else:
                        out[i].append(t)
            if all(done) or step == max_new_tokens - 1:
                break
            feed = np.where(done, pad, tok).astype(np.int64)[:, None]
            valid = np.concatenate([valid, np.ones((B, 1), np.int64)], axis=1)
            logits, past = self.forward(feed, valid, next_pos[:, None], past)
            next_pos = next_pos + 1
        return out, {"prefill_s": prefill, "decode_s": time.perf_counter() - t1}


class OnnxClassifier:
    """A classifier graph on ONNX Runtime: ``logits(input_ids, attention_mask)``, ``predict_proba(texts)``."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _session(path, threads)
        self.meta = json.loads((self.path.parent / "export.json").read_text("utf-8"))

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids.astype(np.int64),
                                       "attention_mask": attention_mask.astype(np.int64)})[0]

    def predict_proba(self, texts: list[str], tokenizer, *, batch_size: int = 32) -> np.ndarray:
        from ..config import from_dict
        from ..data.clean import CleanConfig, clean_text
        from ..tasks.classify import collate, encode_texts

        m = self.meta
        clean = from_dict(CleanConfig, m.get("clean") or {})
        rows, _ = encode_texts(tokenizer, [clean_text(t, clean) for t in texts], m["max_length"],
                               m["head_fraction"])
        out = []
        for lo in range(0, len(rows), batch_size):
            idx, mask = collate(rows[lo:lo + batch_size], m["pad_id"])
            z = self.logits(idx.numpy(), mask.numpy())
            z = np.exp(z - z.max(-1, keepdims=True))
            out.append(z / z.sum(-1, keepdims=True))
        return np.concatenate(out).astype(np.float32)
