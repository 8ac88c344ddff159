"""Classical recurrent baselines for text classification: embedding -> RNN/LSTM/GRU -> pooling -> linear.

The recurrent layer runs over a ``PackedSequence`` (``nn.utils.rnn.pack_padded_sequence``), so padding is
never fed through the cell: a row's logits do not depend on how much padding it carries, on what the pad
positions hold, or on the other rows of the batch. The padding is read from ``attention_mask`` (1 = real
token) or, without one, from ``idx != pad_id``. Masks need not be right-padded: real tokens are moved to
the front of their row (in order) before packing, so left-padded batches give the same logits.

Pooling: ``"last"`` concatenates the final hidden state of each direction of the top layer (the forward
direction's state after the last real token, the backward direction's after the first); ``"max"`` and
``"mean"`` reduce the top layer's outputs over the real tokens only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..model.kinds import RECURRENT_CLASSIFIER_KINDS as CELLS  # a recurrent classifier's kind is its cell

POOLINGS = ("last", "max", "mean")
_CELL_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RNNConfig:
    cell: str = "lstm"  # "rnn" (tanh Elman) | "lstm" | "gru"
    vocab_size: int = 8192
    n_embd: int = 128  # embedding width
    hidden_size: int = 256  # per direction
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.2  # on the embeddings and the pooled output; also between layers when num_layers > 1
    pooling: str = "max"  # "last" | "max" | "mean"
    pad_id: int = 0

    def validate(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"rnn.cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"rnn.pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        for name in ("vocab_size", "n_embd", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"rnn.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"rnn.bidirectional must be true or false, got {self.bidirectional!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"rnn.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) \
                or not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"rnn.pad_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_id!r}")

    @property
    def out_dim(self) -> int:
        """Width of the pooled features: hidden_size per direction."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @classmethod
    def from_dict(cls, d: dict) -> RNNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RNNConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


class RNNClassifier(nn.Module):
    """``embed`` -> ``rnn`` (packed) -> pooling -> ``dropout`` -> ``head`` (nn.Linear(out_dim, num_labels)).

    forward(idx (B, T) long, attention_mask (B, T) or None) -> logits (B, num_labels)."""

    def __init__(self, cfg: RNNConfig, num_labels: int, label_names: list[str] | None = None) -> None:
        super().__init__()
        cfg.validate()
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        if label_names is not None:
            label_names = [str(x) for x in label_names]
            if len(label_names) != num_labels:
                raise ValueError(f"{len(label_names)} label_names for {num_labels} labels")
        self.cfg = cfg
        self.num_labels = num_labels
        self.label_names = label_names
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd, padding_idx=cfg.pad_id)
        self.rnn = _CELL_CLASSES[cfg.cell](
            input_size=cfg.n_embd, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.out_dim, num_labels)
        if cfg.cell == "lstm":
            # forget-gate bias 1 (Jozefowicz et al. 2015): remembers by default early in training
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    with torch.no_grad():
                        p[cfg.hidden_size:2 * cfg.hidden_size].fill_(1.0)
                elif name.startswith("bias_hh"):
                    with torch.no_grad():
                        p[cfg.hidden_size:2 * cfg.hidden_size].zero_()

    # --- bookkeeping ---------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        """Everything that rebuilds this module: ``RNNClassifier.from_config_dict(m.config_dict())``."""
        return {"rnn": asdict(self.cfg), "num_labels": self.num_labels, "label_names": self.label_names}

    @classmethod
    def from_config_dict(cls, d: dict) -> RNNClassifier:
        return cls(RNNConfig.from_dict(dict(d["rnn"])), int(d["num_labels"]), d.get("label_names"))

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- forward -------------------------------------------------------------------------------------
    def _real_tokens(self, idx: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.shape[0] == 0 or idx.shape[1] == 0:
            raise ValueError(f"empty batch: idx has shape {tuple(idx.shape)}")
        if attention_mask is not None:
            if attention_mask.shape != idx.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, idx {tuple(idx.shape)}")
            real = attention_mask.to(device=idx.device).bool()
        else:
            real = idx != self.cfg.pad_id
        empty = (~real.any(dim=1)).nonzero().flatten()
        if empty.numel():
            rows = ", ".join(str(i) for i in empty[:5].tolist()) + (" ..." if empty.numel() > 5 else "")
            how = "its attention_mask is all 0" if attention_mask is not None else \
                f"every token is the pad id {self.cfg.pad_id}"
            raise ValueError(f"row(s) {rows} of the batch have no real tokens ({how})")
        return real

    def features(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled recurrent features (B, out_dim), before dropout and the head."""
        real = self._real_tokens(idx, attention_mask)
        B, T = idx.shape
        lengths = real.sum(dim=1)
        right_padded = bool((real == (torch.arange(T, device=idx.device) < lengths[:, None])).all())
        if not right_padded:
            # move each row's real tokens to its front, keeping their order (stable sort of "is padding")
            order = torch.sort((~real).to(torch.uint8), dim=1, stable=True).indices
            idx = idx.gather(1, order)
            real = real.gather(1, order)
        x = self.dropout(self.embed(idx))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.rnn(packed)
        how = self.cfg.pooling
        if how == "last":
            if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
                h_n = h_n[0]
            dirs = 2 if self.cfg.bidirectional else 1
            top = h_n.view(self.cfg.num_layers, dirs, B, self.cfg.hidden_size)[-1]  # (dirs, B, H), batch order
            return torch.cat(list(top), dim=-1)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, out_dim), zeros at pads
        mask = real.unsqueeze(-1)
        if how == "max":
            return out.masked_fill(~mask, torch.finfo(out.dtype).min).amax(dim=1)
        # "mean"
        return (out * mask.to(out.dtype)).sum(dim=1) / lengths.to(out.dtype).unsqueeze(-1)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.dropout(self.features(idx, attention_mask)))
