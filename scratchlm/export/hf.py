"""Export to a Hugging Face ``transformers`` folder (Llama architecture).

Language models become ``LlamaForCausalLM``; decoder classifiers ``LlamaForSequenceClassification`` (last-token
pooling, exactly HF's) or, for ``pooling: mean``, a subclass shipped beside the weights as
``modeling_scratchlm.py`` and found through ``auto_map`` (load it with ``trust_remote_code=True``). The weights
are renamed, never transformed: our RoPE already uses HF's rotate-half layout. The folder is written by
``save_pretrained`` of a model built from those weights with a strict ``load_state_dict``, so a wrong name or
shape fails here rather than in the user's hands.

LoRA: a model with unmerged adapters is written as the base model plus ``adapter/`` in the PEFT layout
(``PeftModel.from_pretrained(base, out / "adapter")``), or merged (``lora="merge"``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX, lora_modules
from .common import ExportSource, check_exportable, resolve_lora

MODELING_FILE = "modeling_scratchlm.py"
MEAN_POOLING_CLASS = "ScratchLMForSequenceClassification"


def _own_to_hf(name: str) -> str:
    """Our parameter path -> transformers' (``backbone.layers.0.attn.q_proj.weight`` ->
    ``model.layers.0.self_attn.q_proj.weight``)."""
    if name.startswith("backbone."):
        name = name[len("backbone."):]
    if name.startswith("head."):
        return name[len("head."):]  # head.score.weight -> score.weight
    if name.startswith("lm_head"):
        return name
    name = (name.replace("embed.", "embed_tokens.", 1) if name.startswith("embed.") else name)
    name = name.replace(".attn_norm.", ".input_layernorm.").replace(".mlp_norm.", ".post_attention_layernorm.")
    name = name.replace(".attn.", ".self_attn.")
    return "model." + name


def hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under transformers' Llama names (LoRA matrices left out, base layers kept)."""
    out = {}
    for name, t in model.state_dict().items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        name = name.replace(".base_layer.", ".")
        out[_own_to_hf(name)] = t.detach().float().contiguous()
    return out


def llama_config(src: ExportSource) -> dict:
    """``LlamaConfig`` keyword arguments for the model's architecture and special tokens."""
    cfg = src.backbone.cfg
    tok = src.tokenizer
    d = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.mlp_hidden,
             num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
             head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.block_size,
             rms_norm_eps=cfg.norm_eps, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
             tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False, attention_dropout=0.0,
             initializer_range=cfg.init_std, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
             pad_token_id=tok.pad_id)
    if src.is_classifier:
        clf = src.model
        names = clf.label_names or [f"LABEL_{i}" for i in range(clf.num_labels)]
        d.update(num_labels=clf.num_labels, id2label=dict(enumerate(names)),
                 label2id={n: i for i, n in enumerate(names)},
                 pad_token_id=clf.pad_id if clf.pad_id is not None else tok.pad_id)
    return d


def _classifier_tokenizer(tokenizer):
    """Our classifiers read ``<|eos|> text <|eos|>``: a template post-processor makes AutoTokenizer add them."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    from ..tokenizer import EOS

    tk = HFTokenizer.from_str(tokenizer.backend.to_str())
    tk.post_processor = processors.TemplateProcessing(single=f"{EOS} $A {EOS}", pair=f"{EOS} $A {EOS} $B {EOS}",
                                                      special_tokens=[(EOS, tokenizer.eos_id)])
    return tk


def _write_tokenizer(src: ExportSource, out: Path) -> None:
    src.tokenizer.save(out)
    if src.is_classifier:
        _classifier_tokenizer(src.tokenizer).save(str(out / "tokenizer.json"), pretty=True)
        path = out / "tokenizer_config.json"
        conf = json.loads(path.read_text("utf-8"))
        conf["model_max_length"] = int(src.config.get("max_length") or src.backbone.cfg.block_size)
        path.write_text(json.dumps(conf, indent=2) + "\n", "utf-8")


def _build_hf_model(src: ExportSource):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    config = LlamaConfig(**llama_config(src))
    cls = LlamaForSequenceClassification if src.is_classifier else LlamaForCausalLM
    torch.manual_seed(0)
    model = cls(config).eval()
    state = hf_state_dict(src.model)
    if src.is_classifier or src.backbone.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # tied to the embedding, or unused by a classifier
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"HF Llama names do not match ours: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings and not src.is_classifier:
        model.tie_weights()
    return model


def write_peft_adapter(src: ExportSource, folder: Path, base_path: str) -> Path:
    """The model's LoRA layers as a PEFT adapter for the exported HF model (HF module paths)."""
    assert src.lora is not None
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for path, m in lora_modules(src.model).items():
        hf = _own_to_hf(path + ".x")[:-2]
        tensors[f"{PEFT_PREFIX}{hf}.lora_A.weight"] = m.lora_A.weight.detach().float().contiguous().clone()
        tensors[f"{PEFT_PREFIX}{hf}.lora_B.weight"] = m.lora_B.weight.detach().float().contiguous().clone()
    saved = src.lora.effective_modules_to_save()
    hf_saved = []
    for name, p in src.model.named_parameters():
        mod = name.rsplit(".", 1)[0]
        if any(mod == s or mod.endswith("." + s) for s in saved) and ".lora_" not in name:
            hf_name = _own_to_hf(name)
            tensors[PEFT_PREFIX + hf_name] = p.detach().float().contiguous().clone()
            hf_saved.append(hf_name.rsplit(".", 1)[0].rsplit(".", 1)[-1])
    targets = sorted({p.rsplit(".", 1)[-1] for p in lora_modules(src.model)})
    conf = src.lora.to_peft_dict(targets, base_path)
    conf["modules_to_save"] = sorted(set(hf_saved)) or None
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(conf, indent=2) + "\n", "utf-8")
    return folder


def export_hf(src: ExportSource, out: str | Path, *, lora: str | None = None) -> dict:
    """Write the HF folder; returns what was written and how to load it."""
    check_exportable(src, "hf")
    lora = resolve_lora(src, "hf", lora)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = _build_hf_model(src)
    mean = src.is_classifier and src.model.pooling == "mean"
    if mean:
        model.config.pooling = "mean"
        model.config.auto_map = {"AutoModelForSequenceClassification": f"{MODELING_FILE[:-3]}.{MEAN_POOLING_CLASS}"}
    model.save_pretrained(out, safe_serialization=True)
    if mean:
        shutil.copyfile(Path(__file__).with_name("hf_modeling.py"), out / MODELING_FILE)
    _write_tokenizer(src, out)
    info = {"format": "hf", "path": str(out),
            "architecture": MEAN_POOLING_CLASS if mean else type(model).__name__}
    auto = "AutoModelForSequenceClassification" if src.is_classifier else "AutoModelForCausalLM"
    load = f"{auto}.from_pretrained({str(out)!r}{', trust_remote_code=True' if mean else ''})"
    notes = []
    if mean:
        notes.append(f"mean pooling: the model class is {MODELING_FILE} in the folder; load with "
                     f"trust_remote_code=True (without it transformers would pool the last token and be wrong)")
    if src.is_classifier:
        notes.append("AutoTokenizer adds <|eos|> before and after the text, as scratchlm does; scratchlm also "
                     "cleans the text (see config 'clean' in the source model) and truncates long texts "
                     "head+tail, which transformers does not")
    if lora == "peft":
        adapter = write_peft_adapter(src, out / "adapter", str(out.resolve()))
        info["adapter"] = str(adapter)
        load += f" then peft.PeftModel.from_pretrained(model, {str(adapter)!r})"
        notes.append("the folder holds the base weights; the LoRA adapter (PEFT layout) is in adapter/")
    elif lora == "merge":
        notes.append("LoRA adapter merged into the weights")
    info.update(load=load, notes=notes)
    return info
