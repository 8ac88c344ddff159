"""A loaded translation or summarization model's outputs: sources encoded as at training time (the task's
prompt prefix, cut to the model's limits), decoded in length-sorted batches by beam search (greedy with one
beam), for the decoder and the recurrent encoder-decoder baseline alike."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..baselines.seq2seq_rnn import Seq2SeqRNN
from ..model.folder import LoadedModel, load_model
from ..model.kinds import SEQ2SEQ_TASKS
from ..tasks.seq2seq import encode_pairs, prompt_prefix
from .beam import BeamConfig, beam_search

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}


@dataclass
class DecodeConfig:
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    max_new_tokens: int = 64
    min_new_tokens: int = 0  # eos forbidden before this many tokens (a too short subject line scores low)
    max_length_ratio: float | None = 2.0  # per example: at most ratio x source tokens + offset new tokens
    max_length_offset: int = 10
    batch_size: int = 32
    anti_lm_weight: float = 0.0  # decoders only: MMI-antiLM decoding against generic outputs (BeamConfig)
    anti_lm_tokens: int = 4
    # summarizers whose folder holds a fitted extract-or-abstract switch (infer/lead_switch.py): use it
    lead_switch: bool = True

    def beam(self, num_beams: int | None = None) -> BeamConfig:
        cfg = BeamConfig(num_beams=num_beams or self.num_beams, max_new_tokens=self.max_new_tokens,
                         min_new_tokens=self.min_new_tokens,
                         length_penalty=self.length_penalty, no_repeat_ngram_size=self.no_repeat_ngram_size,
                         anti_lm_weight=self.anti_lm_weight, anti_lm_tokens=self.anti_lm_tokens)
        cfg.validate()
        return cfg


def direction(src_lang: str, tgt_lang: str) -> str:
    return f"{src_lang}-{tgt_lang}"


def script_language(text: str) -> str | None:
    """"zh" when most letters of ``text`` are CJK ideographs, "en" when most are Latin, None when there are too
    few letters to tell (numbers, names, a word or two): enough to catch a text given to the wrong translator."""
    cjk = sum(1 for c in text if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf")
    latin = sum(1 for c in text if c.isascii() and c.isalpha())
    if cjk + latin < 4:
        return None
    return "zh" if 2 * cjk >= latin else "en"  # an ideograph carries about as much as two Latin letters


class Seq2SeqModel(LoadedModel):
    """A model folder of task ``translate`` or ``summarize`` (a decoder or a GRU/LSTM encoder-decoder)."""

    def check_direction(self, src: str | None, tgt: str | None) -> tuple[str, str]:
        """The model's (src, tgt) languages; a different direction is an error naming the supported ones."""
        have = (self.config["src_lang"], self.config["tgt_lang"])
        want = (src or have[0], tgt or have[1])
        if want != have:
            raise ValueError(f"this model was fine-tuned for {direction(*have)}; {direction(*want)} is not "
                             f"supported (supported directions: {direction(*have)})")
        return have

    @property
    def prefix(self) -> list[int]:
        return prompt_prefix(self.tokenizer, self.task, self.config["src_lang"], self.config["tgt_lang"])

    def prompts(self, sources: list[str]) -> tuple[list[list[int]], int]:
        prefix = self.prefix
        if isinstance(self.model, Seq2SeqRNN):
            block = self.model.cfg.max_source_len + len(prefix) + 1 + self.config["max_target_tokens"] + 1
        else:
            block = self.model.cfg.block_size
        examples, report = encode_pairs(self.tokenizer, sources, None, prefix, block_size=block,
                                        max_target_tokens=self.config["max_target_tokens"],
                                        head_fraction=self.config.get("source_head_fraction", 1.0),
                                        max_source_tokens=self.config.get("max_source_tokens"),
                                        prefix_space=self.config.get("prefix_space", False))
        if report.dropped_empty:
            raise ValueError(f"{report.dropped_empty} empty source line(s), first at line {report.dropped[0] + 1}")
        return [e.prompt for e in examples], report.source_truncated

    def generate(self, sources: list[str], decode: DecodeConfig, *, num_beams: int | None = None,
                 progress: bool = False) -> list[str]:
        """Outputs for ``sources`` (batched by length), greedy when num_beams == 1. An empty (or blank)
        source gets an empty output, with a warning, so outputs stay aligned with their lines."""
        empty = [i for i, s in enumerate(sources) if not s.strip()]
        if empty:
            warnings.warn(f"{len(empty)} empty source line(s) (first at line {empty[0] + 1}): their outputs are "
                          f"left empty", stacklevel=2)
            keep = [i for i, s in enumerate(sources) if s.strip()]
            outs = self.generate([sources[i] for i in keep], decode, num_beams=num_beams,
                                 progress=progress) if keep else []
            full = [""] * len(sources)
            for i, o in zip(keep, outs):
                full[i] = o
            return full
        if self.task == "translate":
            src = self.config["src_lang"]
            wrong = [i for i, t in enumerate(sources) if script_language(t) not in (None, src)]
            if wrong:
                warnings.warn(f"{len(wrong)} source(s) (first at line {wrong[0] + 1}) do not look like "
                              f"{LANGUAGE_NAMES.get(src, src)}, and this model translates "
                              f"{direction(src, self.config['tgt_lang'])}: their outputs will be poor", stacklevel=2)
        prompts, cut = self.prompts(sources)
        if cut:
            limit = self.config.get("max_source_tokens")
            warnings.warn(f"{cut} source(s) longer than the context"
                          + (f" or the model's max_source_tokens ({limit})" if limit else "") + " were truncated",
                          stacklevel=2)
        cfg = decode.beam(num_beams)
        order = np.argsort([-len(p) for p in prompts], kind="stable")
        out: list[str] = [""] * len(prompts)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), desc=self.task, unit="text", dynamic_ncols=True)
        for lo in range(0, len(prompts), decode.batch_size):
            sel = order[lo:lo + decode.batch_size]
            for i, h in zip(sel, self._decode([prompts[i] for i in sel], cfg, decode)):
                out[i] = self.tokenizer.decode(h[0].tokens).strip()
            if bar is not None:
                bar.update(len(sel))
        if bar is not None:
            bar.close()
        switch = self.config.get("lead_switch")
        if switch and decode.lead_switch and not isinstance(self.model, Seq2SeqRNN):
            from .lead_switch import choose

            out = choose(switch, sources, out, self.target_loss)
        return out

    def target_loss(self, sources: list[str], targets: list[str]) -> np.ndarray:
        """Mean next-token loss (nats) of each target as the output for its source, one example at a time
        (the lead switch reads how plausible the e-mail's first sentence is as its subject)."""
        from ..tasks.seq2seq import Seq2SeqLoss, packed_batch

        if isinstance(self.model, Seq2SeqRNN):
            raise ValueError("target_loss is for decoder models")
        examples, _ = encode_pairs(self.tokenizer, sources, targets, self.prefix, block_size=self.model.cfg.block_size,
                                   max_target_tokens=self.config["max_target_tokens"],
                                   head_fraction=self.config.get("source_head_fraction", 1.0),
                                   max_source_tokens=self.config.get("max_source_tokens"),
                                   prefix_space=self.config.get("prefix_space", False))
        loss_fn = Seq2SeqLoss(self.model)
        out = np.zeros(len(examples))
        with torch.no_grad():
            for i in range(len(examples)):
                total, n = loss_fn(packed_batch(examples, [[i]], self.model.cfg.block_size, self.tokenizer.pad_id))
                out[i] = float(total) / max(1, int(n))
        return out

    def _decode(self, prompts: list[list[int]], cfg: BeamConfig, decode: DecodeConfig):
        tok = self.tokenizer
        if not isinstance(self.model, Seq2SeqRNN):
            return beam_search(self.model, prompts, cfg, pad_id=tok.pad_id, eos_id=tok.eos_id,
                               max_length_ratio=decode.max_length_ratio, max_length_offset=decode.max_length_offset,
                               source_starts=[len(self.prefix)] * len(prompts))
        if cfg.anti_lm_weight:
            raise ValueError("anti_lm_weight is for decoder models; the recurrent encoder-decoder has no "
                             "source-free language model to subtract")
        # the encoder reads the bare source (no prefix, no <|sep|>)
        n = len(self.prefix)
        src = [p[n:-1] for p in prompts]
        S = max(len(x) for x in src)
        ids = torch.full((len(src), S), tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(src), S), dtype=torch.long)
        for r, x in enumerate(src):
            ids[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = 1
        return self.model.beam(ids, mask, cfg, max_length_ratio=decode.max_length_ratio,
                               max_length_offset=decode.max_length_offset)


def load_seq2seq(path: str | Path, device: str = "cpu") -> Seq2SeqModel:
    return Seq2SeqModel.view(load_model(path, device, tasks=SEQ2SEQ_TASKS))
