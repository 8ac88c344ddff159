"""The classic recurrent encoder-decoder with attention (Sutskever et al. 2014; Bahdanau et al. 2015; Luong et
al. 2015), batched: the baseline for translation and summarization. Source and target share the project's
BPE vocabulary (one tokenizer), so with ``tie_embeddings`` the encoder and the decoder share one embedding.

Encoder: embedding -> dropout -> GRU/LSTM (bidirectional by default) over a ``PackedSequence``, so padding
is never fed through the cell. Sources need not be right-padded: real tokens are moved to the front of their
row (in order) for packing and the outputs are put back at their positions. What pad positions hold does not
matter (they are replaced by ``pad_id`` before the embedding).

Bridge: the decoder (same cell, ``num_layers`` layers, unidirectional, ``hidden_size``) starts from
``tanh(W [h_fwd; h_bwd])`` of the encoder's final states, layer by layer (LSTM cells: ``W' [c_fwd; c_bwd]``,
no tanh).

Decoder step t (input token y_{t-1}, state s_{t-1}, attentional vector h~_{t-1}, zeros at t = 0):

* ``"bahdanau"``: additive scores ``v . tanh(W_q s_{t-1} + W_k h_j)`` over the encoder outputs h_j, queried
  by the previous top-layer state; the context c_t is fed into the cell with the embedding;
* ``"luong"``: the cell runs first, then "general" (bilinear) scores ``s_t . W_a h_j`` (``W_a = I`` would be
  Luong's "dot");
* ``"none"``: no attention; the decoder sees the source only through the bridged initial state.

With attention the attentional vector is ``h~_t = tanh(W_c [s_t; c_t])``, without it ``h~_t = s_t``; the
logits are ``out(dropout(h~_t))``. ``input_feeding`` also feeds h~_{t-1} into step t (Luong's input feeding).
Padded source positions get attention weight exactly 0 (their scores are -inf before the softmax) and every
row has at least one real source token, so the weights of a row sum to 1.

Teacher forcing runs the decoder step by step when a step depends on the previous one beyond the cell state
(``"bahdanau"`` or ``input_feeding``); otherwise the cell runs over the whole target in one call and attention
is computed for all positions at once (same numbers up to rounding).

Weight tying: with ``tie_embeddings`` the encoder and the decoder use one embedding, and the output
projection shares its weight when the attentional vector has the embedding's width (``hidden_size ==
n_embd``; ``Seq2SeqRNN.output_tied`` says whether it is).

Decoding: ``greedy`` and ``beam`` (``scratchlm.infer.beam.BeamConfig``; Hugging Face scoring, length penalty
and stopping rules: the beam loop of ``scratchlm.infer.beam``, which the decoder uses too) decode a batch of
sources at once, each output starting after ``bos`` and ending at ``eos`` (neither is returned).
``max_target_len`` caps every output (eos included).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..infer.beam import BeamConfig, BeamHypothesis, check_length_limits, search
from ..infer.generate import eval_mode, is_int
from ..model.kinds import RECURRENT_SEQ2SEQ_KINDS as CELLS  # an encoder-decoder's kind is its cell

ATTENTIONS = ("bahdanau", "luong", "none")
_CELL_CLASSES = {"gru": nn.GRU, "lstm": nn.LSTM}
IGNORE_INDEX = -100


@dataclass
class Seq2SeqRNNConfig:
    cell: str = "gru"  # "gru" | "lstm" (encoder and decoder)
    vocab_size: int = 8192  # shared by source and target (one tokenizer)
    n_embd: int = 256  # embedding width
    hidden_size: int = 256  # per direction in the encoder; the decoder's state and attentional vector
    num_layers: int = 1  # encoder and decoder alike
    bidirectional_encoder: bool = True
    attention: str = "bahdanau"  # "bahdanau" (additive) | "luong" (general, bilinear) | "none"
    input_feeding: bool = False  # also feed the previous attentional vector into each decoder step
    dropout: float = 0.2  # embeddings, between layers, before the output projection
    tie_embeddings: bool = True  # one embedding for encoder and decoder; output tied when hidden == n_embd
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    max_source_len: int = 512  # real source tokens per row
    max_target_len: int = 256  # target length T (tgt_in / tgt_out columns); caps decoded outputs (eos included)

    def validate(self) -> None:
        p = "seq2seq_rnn."
        if self.cell not in CELLS:
            raise ValueError(f"{p}cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"{p}attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        for name in ("vocab_size", "n_embd", "hidden_size", "num_layers", "max_source_len", "max_target_len"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ValueError(f"{p}{name} must be a positive integer, got {value!r}")
        for name in ("bidirectional_encoder", "input_feeding", "tie_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{p}{name} must be true or false, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{p}dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not is_int(value) or not 0 <= value < self.vocab_size:
                raise ValueError(f"{p}{name} must be a token id in [0, vocab_size={self.vocab_size}), got {value!r}")
        if self.bos_id == self.eos_id:
            raise ValueError(f"{p}eos_id must differ from bos_id (both {self.eos_id})")

    @property
    def encoder_dim(self) -> int:
        """Width of the encoder outputs (the attention's values): hidden_size per direction."""
        return self.hidden_size * (2 if self.bidirectional_encoder else 1)

    @classmethod
    def from_dict(cls, d: dict) -> Seq2SeqRNNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown Seq2SeqRNNConfig field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class EncoderMemory:
    """What the decoder attends to, one row per (source, beam)."""

    values: torch.Tensor  # (N, S, encoder_dim) encoder outputs, zeros at padded positions
    keys: torch.Tensor | None  # (N, S, hidden) projected outputs for the scores (None without attention)
    mask: torch.Tensor  # (N, S) bool, True = real source token

    def index_select(self, index: torch.Tensor) -> EncoderMemory:
        keys = None if self.keys is None else self.keys.index_select(0, index)
        return EncoderMemory(self.values.index_select(0, index), keys, self.mask.index_select(0, index))


@dataclass
class DecoderState:
    """The recurrent state between decoder steps."""

    h: torch.Tensor  # (num_layers, N, hidden)
    c: torch.Tensor | None  # LSTM cell state, like h
    feed: torch.Tensor | None  # (N, hidden) previous attentional vector (input feeding only)

    def rnn_state(self):
        return self.h if self.c is None else (self.h, self.c)

    def index_select(self, index: torch.Tensor) -> DecoderState:
        def pick(x, dim):
            return None if x is None else x.index_select(dim, index)

        return DecoderState(pick(self.h, 1), pick(self.c, 1), pick(self.feed, 0))


def make_batch(pairs: list[tuple[list[int], list[int]]], cfg: Seq2SeqRNNConfig) -> dict[str, torch.Tensor]:
    """A training batch from (source ids, target ids) pairs (no bos/eos in them): right-padded ``src`` and
    ``src_mask``, ``tgt_in`` = bos + target (padded with pad_id), ``tgt_out`` = target + eos (padded with -100)."""
    if not pairs:
        raise ValueError("make_batch needs at least one (source, target) pair")
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs) + 1
    src = torch.full((len(pairs), S), cfg.pad_id, dtype=torch.long)
    src_mask = torch.zeros((len(pairs), S), dtype=torch.long)
    tgt_in = torch.full((len(pairs), T), cfg.pad_id, dtype=torch.long)
    tgt_out = torch.full((len(pairs), T), IGNORE_INDEX, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        if not s:
            raise ValueError(f"pair {i} has an empty source")
        src[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        src_mask[i, :len(s)] = 1
        tgt_in[i, :len(t) + 1] = torch.tensor([cfg.bos_id, *t], dtype=torch.long)
        tgt_out[i, :len(t) + 1] = torch.tensor([*t, cfg.eos_id], dtype=torch.long)
    return {"src": src, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out}


class Seq2SeqRNN(nn.Module):
    """Recurrent encoder-decoder with attention (see the module docstring).

    forward(src (B, S) long, src_mask (B, S) or None, tgt_in (B, T) long) -> logits (B, T, vocab_size)."""

    def __init__(self, cfg: Seq2SeqRNNConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        H, E, D, L = cfg.hidden_size, cfg.encoder_dim, cfg.n_embd, cfg.num_layers
        dirs = 2 if cfg.bidirectional_encoder else 1
        rnn_cls = _CELL_CLASSES[cfg.cell]
        between = cfg.dropout if L > 1 else 0.0

        self.src_embed = nn.Embedding(cfg.vocab_size, D, padding_idx=cfg.pad_id)
        self.tgt_embed = self.src_embed if cfg.tie_embeddings else nn.Embedding(cfg.vocab_size, D,
                                                                                padding_idx=cfg.pad_id)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = rnn_cls(D, H, num_layers=L, batch_first=True, bidirectional=cfg.bidirectional_encoder,
                               dropout=between)
        self.bridge_h = nn.Linear(dirs * H, H)
        self.bridge_c = nn.Linear(dirs * H, H) if cfg.cell == "lstm" else None

        dec_in = D + (E if cfg.attention == "bahdanau" else 0) + (H if cfg.input_feeding else 0)
        self.decoder = rnn_cls(dec_in, H, num_layers=L, batch_first=True, dropout=between)
        if cfg.attention == "none":
            self.attn_keys = self.attn_query = self.attn_v = self.attn_combine = None
        else:
            self.attn_keys = nn.Linear(E, H, bias=False)  # W_k (bahdanau) or W_a (luong general)
            self.attn_query = nn.Linear(H, H) if cfg.attention == "bahdanau" else None
            self.attn_v = nn.Linear(H, 1, bias=False) if cfg.attention == "bahdanau" else None
            self.attn_combine = nn.Linear(H + E, H, bias=False)  # W_c
        self.out = nn.Linear(H, cfg.vocab_size)
        self._init_weights()
        if cfg.tie_embeddings and H == D:
            self.out.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        cfg = self.cfg
        for emb in {id(m): m for m in (self.src_embed, self.tgt_embed)}.values():
            nn.init.uniform_(emb.weight, -0.1, 0.1)
            with torch.no_grad():
                emb.weight[cfg.pad_id].zero_()
        if cfg.cell == "lstm":
            # forget-gate bias 1 (Jozefowicz et al. 2015), as in scratchlm.baselines.rnn
            H = cfg.hidden_size
            for rnn in (self.encoder, self.decoder):
                for name, p in rnn.named_parameters():
                    with torch.no_grad():
                        if name.startswith("bias_ih"):
                            p[H:2 * H].fill_(1.0)
                        elif name.startswith("bias_hh"):
                            p[H:2 * H].zero_()

    @property
    def output_tied(self) -> bool:
        """Does the output projection share the (target) embedding's weight?"""
        return self.out.weight is self.tgt_embed.weight

    # --- bookkeeping ---------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        """Everything that rebuilds this module: ``Seq2SeqRNN.from_config_dict(m.config_dict())``."""
        return {"seq2seq_rnn": asdict(self.cfg)}

    @classmethod
    def from_config_dict(cls, d: dict) -> Seq2SeqRNN:
        return cls(Seq2SeqRNNConfig.from_dict(dict(d["seq2seq_rnn"])))

    def num_params(self, trainable_only: bool = False) -> int:
        """Parameters, tied ones counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- input checks --------------------------------------------------------------------------------
    def _check_ids(self, name: str, ids: torch.Tensor, where: torch.Tensor | None = None) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError(f"{name} must be a tensor of shape (B, length), got "
                             f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}")
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"empty batch: {name} has shape {tuple(ids.shape)}")
        vals = ids if where is None else ids[where]
        if vals.numel() and (int(vals.min()) < 0 or int(vals.max()) >= self.cfg.vocab_size):
            raise ValueError(f"{name} has a token id outside [0, {self.cfg.vocab_size}) (the vocabulary)")

    def _source_mask(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        if not isinstance(src, torch.Tensor) or src.dim() != 2:
            raise ValueError("src must be a tensor of shape (B, S)")
        if src_mask is not None:
            if tuple(src_mask.shape) != tuple(src.shape):
                raise ValueError(f"src_mask has shape {tuple(src_mask.shape)}, src {tuple(src.shape)}")
            real = src_mask.to(device=src.device).bool()
        else:
            real = src != self.cfg.pad_id
        self._check_ids("src", src, real)
        empty = (~real.any(dim=1)).nonzero().flatten()
        if empty.numel():
            rows = ", ".join(str(i) for i in empty[:5].tolist()) + (" ..." if empty.numel() > 5 else "")
            how = "its src_mask is all 0" if src_mask is not None else f"every token is the pad id {self.cfg.pad_id}"
            raise ValueError(f"source row(s) {rows} of the batch have no real tokens ({how})")
        longest = int(real.sum(dim=1).max())
        if longest > self.cfg.max_source_len:
            raise ValueError(f"a source has {longest} tokens, more than max_source_len {self.cfg.max_source_len}")
        return real

    # --- encoder -------------------------------------------------------------------------------------
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> tuple[EncoderMemory, DecoderState]:
        """Encoder outputs (for attention) and the decoder's initial state."""
        cfg = self.cfg
        real = self._source_mask(src, src_mask)
        B, S = src.shape
        lengths = real.sum(dim=1)
        src = src.masked_fill(~real, cfg.pad_id)
        right_padded = bool((real == (torch.arange(S, device=src.device) < lengths[:, None])).all())
        order = None
        if not right_padded:
            # move each row's real tokens to its front, keeping their order (stable sort of "is padding")
            order = torch.sort((~real).to(torch.uint8), dim=1, stable=True).indices
            src = src.gather(1, order)
        x = self.dropout(self.src_embed(src))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # zeros at padding
        if order is not None:  # back to the original positions
            out = torch.zeros_like(out).scatter(1, order.unsqueeze(-1).expand_as(out), out)
        keys = None if self.attn_keys is None else self.attn_keys(out)
        memory = EncoderMemory(out, keys, real)

        h_n, c_n = final if isinstance(final, tuple) else (final, None)

        def per_layer(x: torch.Tensor) -> torch.Tensor:  # (L * dirs, B, H) -> (L, B, dirs * H)
            dirs = 2 if cfg.bidirectional_encoder else 1
            x = x.view(cfg.num_layers, dirs, B, cfg.hidden_size)
            return torch.cat(list(x.unbind(1)), dim=-1)

        h0 = torch.tanh(self.bridge_h(per_layer(h_n)))
        c0 = None if c_n is None else self.bridge_c(per_layer(c_n))
        feed = out.new_zeros(B, cfg.hidden_size) if cfg.input_feeding else None
        return memory, DecoderState(h0.contiguous(), None if c0 is None else c0.contiguous(), feed)

    # --- decoder -------------------------------------------------------------------------------------
    def _attend(self, query: torch.Tensor, memory: EncoderMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """query (N, T, H) -> context (N, T, encoder_dim), weights (N, T, S) (0 on padding, rows sum to 1)."""
        if self.cfg.attention == "bahdanau":
            scores = self.attn_v(torch.tanh(memory.keys.unsqueeze(1) + self.attn_query(query).unsqueeze(2)))
            scores = scores.squeeze(-1)
        else:  # luong "general"
            scores = torch.bmm(query, memory.keys.transpose(1, 2))
        scores = scores.masked_fill(~memory.mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(dim=-1)
        return torch.bmm(weights, memory.values), weights

    def _combine(self, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is None:
            return h
        return torch.tanh(self.attn_combine(torch.cat([h, context], dim=-1)))

    def decode(self, emb: torch.Tensor, state: DecoderState, memory: EncoderMemory
               ) -> tuple[torch.Tensor, torch.Tensor | None, DecoderState]:
        """Embedded targets (N, T, n_embd) -> attentional vectors (N, T, H), attention weights (N, T, S) or
        None, and the state after the last step."""
        cfg = self.cfg
        if cfg.attention != "bahdanau" and not cfg.input_feeding:  # no step-to-step dependency: one call
            out, hidden = self.decoder(emb, state.rnn_state())
            context, weights = self._attend(out, memory) if cfg.attention == "luong" else (None, None)
            h, c = hidden if isinstance(hidden, tuple) else (hidden, None)
            return self._combine(out, context), weights, DecoderState(h, c, None)
        hidden, feed = state.rnn_state(), state.feed
        outs, all_weights = [], []
        for t in range(emb.shape[1]):
            x, weights = [emb[:, t:t + 1]], None
            if cfg.attention == "bahdanau":
                top = (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]
                context, weights = self._attend(top.unsqueeze(1), memory)
                x.append(context)
            if feed is not None:
                x.append(feed.unsqueeze(1))
            out, hidden = self.decoder(torch.cat(x, dim=-1), hidden)
            if cfg.attention == "luong":
                context, weights = self._attend(out, memory)
            elif cfg.attention == "none":
                context = None
            att = self._combine(out, context)
            if cfg.input_feeding:
                feed = att[:, 0]
            outs.append(att)
            all_weights.append(weights)
        h, c = hidden if isinstance(hidden, tuple) else (hidden, None)
        weights = None if cfg.attention == "none" else torch.cat(all_weights, dim=1)
        return torch.cat(outs, dim=1), weights, DecoderState(h, c, feed)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None, tgt_in: torch.Tensor,
                return_attention: bool = False):
        """Teacher-forced logits (B, T, vocab_size); with ``return_attention`` also the attention weights
        (B, T, S) (None for ``attention="none"``)."""
        self._check_ids("tgt_in", tgt_in)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"src has {src.shape[0]} rows, tgt_in {tgt_in.shape[0]}")
        if tgt_in.shape[1] > self.cfg.max_target_len:
            raise ValueError(f"tgt_in has {tgt_in.shape[1]} positions, more than max_target_len "
                             f"{self.cfg.max_target_len}")
        memory, state = self.encode(src, src_mask)
        att, weights, _ = self.decode(self.dropout(self.tgt_embed(tgt_in)), state, memory)
        logits = self.out(self.dropout(att))
        return (logits, weights) if return_attention else logits

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy over the target tokens, number of target tokens); -100 in tgt_out is ignored."""
        tgt_out = batch["tgt_out"]
        if tuple(tgt_out.shape) != tuple(batch["tgt_in"].shape):
            raise ValueError(f"tgt_out has shape {tuple(tgt_out.shape)}, tgt_in {tuple(batch['tgt_in'].shape)}")
        logits = self(batch["src"], batch.get("src_mask"), batch["tgt_in"])
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), ignore_index=IGNORE_INDEX,
                               reduction="sum")
        return loss, (tgt_out != IGNORE_INDEX).sum()

    def step(self, tokens: torch.Tensor, state: DecoderState, memory: EncoderMemory
             ) -> tuple[torch.Tensor, DecoderState]:
        """One decoder step: the previous tokens (N,) -> next-token logits (N, vocab_size) and the new state."""
        att, _, state = self.decode(self.dropout(self.tgt_embed(tokens.unsqueeze(1))), state, memory)
        return self.out(self.dropout(att[:, 0])), state

    # --- decoding ------------------------------------------------------------------------------------
    def _limit(self, max_new_tokens: int | None) -> int:
        if max_new_tokens is None:
            return self.cfg.max_target_len
        if not is_int(max_new_tokens) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        return min(max_new_tokens, self.cfg.max_target_len)

    @torch.inference_mode()
    def greedy(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
               max_new_tokens: int | None = None) -> list[list[int]]:
        """Greedy outputs per source (without bos and eos), at most ``max_new_tokens`` tokens with the eos
        (default and cap: ``max_target_len``). Runs in eval mode (the training flag is restored)."""
        limit = self._limit(max_new_tokens)
        cfg = self.cfg
        with eval_mode(self):
            memory, state = self.encode(src, src_mask)
            B = src.shape[0]
            tokens = torch.full((B,), cfg.bos_id, dtype=torch.long, device=src.device)
            outputs: list[list[int]] = [[] for _ in range(B)]
            done = [False] * B
            for _ in range(limit):
                logits, state = self.step(tokens, state, memory)
                tokens = logits.argmax(dim=-1)
                for b, tok in enumerate(tokens.tolist()):
                    if done[b]:
                        continue
                    if tok == cfg.eos_id:
                        done[b] = True
                    else:
                        outputs[b].append(tok)
                if all(done):
                    break
        return outputs

    @torch.inference_mode()
    def beam(self, src: torch.Tensor, src_mask: torch.Tensor | None = None, cfg: BeamConfig | None = None, *,
             max_length_ratio: float | None = None, max_length_offset: int = 0) -> list[list[BeamHypothesis]]:
        """Beam search (``scratchlm.infer.beam`` semantics): per source, up to ``cfg.num_return_sequences``
        hypotheses sorted by score, best first; ``tokens`` exclude bos and eos. An output has at most
        ``min(cfg.max_new_tokens, max_target_len)`` tokens with the eos, and with ``max_length_ratio`` at most
        ``int(source length * ratio) + max_length_offset`` (at least 1). ``cfg.eos_id`` overrides the model's
        eos. ``num_beams=1`` is ``greedy``. Runs in eval mode (the training flag is restored)."""
        cfg = cfg if cfg is not None else BeamConfig()
        cfg.validate()
        check_length_limits(max_length_ratio, max_length_offset)
        eos = cfg.eos_id if cfg.eos_id is not None else self.cfg.eos_id
        if not 0 <= eos < self.cfg.vocab_size:
            raise ValueError(f"eos_id must be a token id in [0, {self.cfg.vocab_size}), got {eos!r}")
        cap = self._limit(cfg.max_new_tokens)
        with eval_mode(self):
            memory, state = self.encode(src, src_mask)
            if max_length_ratio is None:
                limits = [cap] * src.shape[0]
            else:
                lengths = memory.mask.sum(dim=1).tolist()
                limits = [max(1, min(cap, int(n * max_length_ratio) + max_length_offset)) for n in lengths]
            hyps = self._beam_search(memory, state, cfg, eos, limits)
        return [h.best(cfg.num_return_sequences) for h in hyps]

    def _beam_search(self, memory: EncoderMemory, state: DecoderState, cfg: BeamConfig, eos_id: int,
                     limits: list[int]):
        """``scratchlm.infer.beam.search`` with the recurrent state in place of the KV cache."""
        B, K = memory.mask.shape[0], cfg.num_beams
        device = memory.values.device
        expand = torch.arange(B, device=device).repeat_interleave(K)  # row b * K + k = beam k of source b
        if K > 1:
            memory, state = memory.index_select(expand), state.index_select(expand)
        logits, state = self.step(torch.full((B * K,), self.cfg.bos_id, dtype=torch.long, device=device),
                                  state, memory)

        def step(tokens: torch.Tensor, live: list[bool]) -> torch.Tensor:
            nonlocal state
            logits, state = self.step(tokens, state, memory)
            return logits

        def reorder(index: torch.Tensor) -> None:
            nonlocal state
            state = state.index_select(index)

        return search(logits, cfg, eos_id=eos_id, pad_id=self.cfg.pad_id, limits=limits, step=step, reorder=reorder)


class Seq2SeqRNNLoss(nn.Module):
    """forward(batch) -> (summed target-token cross-entropy, number of target tokens): a Task's loss module."""

    def __init__(self, model: Seq2SeqRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.loss(batch)
