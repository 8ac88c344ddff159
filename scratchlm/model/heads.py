"""Sequence classification on top of the decoder: pooled final hidden state -> ``score`` linear layer.

As in Hugging Face ``LlamaForSequenceClassification`` the default pooling takes the hidden state of each
row's last real token (the only one that has seen the whole text under causal attention); ``"mean"``
averages the real tokens instead. Batches are right-padded; when a batch has padding the backbone gets a
boolean (B, 1, T, T) mask, causal and hiding padded keys, so a row's logits do not depend on how much
padding it carries or on what the pad positions hold.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transformer import ModelConfig, Transformer

POOLINGS = ("last", "mean")


class ClassificationHead(nn.Module):
    """Optional dropout, then ``score``: ``nn.Linear(n_embd, num_labels)`` (no bias, as in HF Llama)."""

    def __init__(self, n_embd: int, num_labels: int, *, dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.score = nn.Linear(n_embd, num_labels, bias=bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.score(self.dropout(pooled))


def real_token_mask(idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    pad_id: int | None = None) -> torch.Tensor | None:
    """Boolean (B, T), True at real tokens; None when there is neither a mask nor a pad id (no padding)."""
    if attention_mask is not None:
        if attention_mask.shape != idx.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, idx {tuple(idx.shape)}")
        return attention_mask.to(device=idx.device).bool()
    if pad_id is not None:
        return idx != pad_id
    return None


def padded_attention_mask(real: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean, True = may attend: causal, and only real keys.

    A padded query also sees itself, so no row of the mask is empty (an empty row makes SDPA return NaN);
    what padded positions compute is never used."""
    T = real.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=real.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=real.device)
    return (causal & (real[:, None, None, :] | eye))


def right_padded(real: torch.Tensor) -> bool:
    """True when every row's real tokens form a prefix (padding, if any, only at the end)."""
    return bool((real[:, 1:] <= real[:, :-1]).all())


def pool(hidden: torch.Tensor, real: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, C) -> (B, C): the last real token's state ("last") or the mean over real tokens ("mean")."""
    if how == "last":
        if real is None:
            return hidden[:, -1]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (positions * real).argmax(dim=1)  # as HF: the last real position, also under left padding
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "mean":
        if real is None:
            return hidden.mean(dim=1)
        w = real.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)
    raise ValueError(f"unknown pooling {how!r}; choose one of {', '.join(POOLINGS)}")


class SequenceClassifier(nn.Module):
    """``backbone`` (a Transformer; its lm_head is unused) + ``head`` (a ClassificationHead).

    forward(idx, attention_mask=None) -> logits (B, num_labels). The padding is read from
    ``attention_mask`` (1 = real token) or, without one, from ``pad_id``; prefer the mask when the pad
    token also occurs in real text (e.g. eos used as pad)."""

    def __init__(self, backbone: Transformer | ModelConfig, num_labels: int, *, pooling: str = "last",
                 dropout: float = 0.0, pad_id: int | None = None, label_names: list[str] | None = None,
                 bias: bool = False) -> None:
        super().__init__()
        if isinstance(backbone, ModelConfig):
            backbone = Transformer(backbone)
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"classifier dropout must be in [0, 1), got {dropout}")
        if label_names is not None:
            label_names = [str(x) for x in label_names]
            if len(label_names) != num_labels:
                raise ValueError(f"{len(label_names)} label_names for {num_labels} labels")
        self.backbone = backbone
        self.cfg = backbone.cfg
        self.num_labels = num_labels
        self.pooling = pooling
        self.pad_id = pad_id
        self.label_names = label_names
        self.head = ClassificationHead(backbone.cfg.n_embd, num_labels, dropout=dropout, bias=bias)
        nn.init.normal_(self.head.score.weight, mean=0.0, std=backbone.cfg.init_std)
        if bias:
            nn.init.zeros_(self.head.score.bias)
        if backbone.lm_head.weight is not backbone.embed.weight:
            # an untied output head is never used here: freeze it (DDP rejects unused trainable parameters)
            backbone.lm_head.weight.requires_grad_(False)

    def config_dict(self) -> dict:
        """What, besides the backbone's ModelConfig, rebuilds this module."""
        return {"num_labels": self.num_labels, "pooling": self.pooling, "pad_id": self.pad_id,
                "label_names": self.label_names,
                "dropout": getattr(self.head.dropout, "p", 0.0), "bias": self.head.score.bias is not None}

    def features(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled hidden states (B, n_embd)."""
        T = idx.shape[1]
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds the context length {self.cfg.block_size}")
        real = real_token_mask(idx, attention_mask, self.pad_id)
        if real is not None and bool(real.all()):
            real = None  # no padding in this batch: the plain causal path
        if real is None or right_padded(real):
            # Under causal attention a real token never sees the pads after it, so right padding needs no
            # mask and positions 0..T-1 are already right: the fused is_causal SDPA path, the fast one on CPU.
            hidden = self.backbone(idx)
            if real is not None and not bool(real[:, 0].all()):
                raise ValueError("a row of the batch has no real tokens (its attention_mask is all 0)")
        else:
            if not bool(real.any(dim=1).all()):
                raise ValueError("a row of the batch has no real tokens (its attention_mask is all 0)")
            # positions count real tokens only: identical to 0..T-1 under right padding, and correct under left
            position_ids = (real.long().cumsum(dim=1) - 1).clamp(min=0)
            hidden = self.backbone(idx, position_ids=position_ids, mask=padded_attention_mask(real))
        return pool(hidden, real, self.pooling)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(idx, attention_mask))

    def freeze_layers(self, n: int) -> int:
        """Freeze the token embedding (and the output head tied to it) and the first ``n`` blocks.

        Only freezes, never unfreezes (so it composes with LoRA). Returns the number of frozen parameters."""
        if not 0 <= n <= self.cfg.n_layer:
            raise ValueError(f"freeze_layers: n must be in [0, {self.cfg.n_layer}], got {n}")
        frozen = 0
        modules = [self.backbone.embed, *self.backbone.layers[:n]]
        for m in modules:
            for p in m.parameters():
                if p.requires_grad:
                    p.requires_grad_(False)
                    frozen += p.numel()
        return frozen


class ClassificationLoss(nn.Module):
    """The trainer's loss module: forward(batch) -> (summed cross-entropy, number of labelled rows).

    batch: ``idx`` (B, T), ``labels`` (B,) with -100 = ignore, optional ``attention_mask`` (B, T)."""

    def __init__(self, model: SequenceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["idx"], batch.get("attention_mask"))
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
        return loss, (labels != -100).sum()
