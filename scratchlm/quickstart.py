"""``scratchlm quickstart``: the whole pipeline on real data, sized for a laptop CPU.

tinyshakespeare -> byte-level BPE -> token shards -> a ~3M-parameter Llama-style decoder pretrained for a
few minutes -> bits-per-byte on held-out text -> samples with the KV cache. It ends by printing where the
report, the model and the samples are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

CONFIG = Path(__file__).parent / "configs" / "shakespeare.yaml"
PROMPTS = ["ROMEO:\n", "First Citizen:\nWe are", "KING HENRY:\nMy lords,"]


def run(out_dir: str = "runs/quickstart", minutes: float = 4.0, data_dir: str | None = None,
        extra: list[str] | None = None) -> int:
    from .generate import SamplingConfig, generate_text
    from .model.io import load_model
    from .pretrain import build_config
    from .pretrain import run as pretrain

    t0 = time.time()
    out = Path(out_dir)
    overrides = [f"train.out_dir={out}", f"train.max_time_s={minutes * 60}", "train.max_steps=100000",
                 "train.eval_interval=200", *(extra or [])]
    cfg = build_config(CONFIG, overrides)
    if data_dir:
        cfg.data.data_dir = data_dir
    print(f"[1/3] pretraining a {cfg.model_preset} decoder on {', '.join(c.name for c in cfg.data.corpora)} "
          f"for up to {minutes:g} minutes")
    report = pretrain(cfg)
    print("[2/3] sampling with the KV cache")
    loaded = load_model(report["model_dir"])
    samples = generate_text(loaded.model, loaded.tokenizer, PROMPTS,
                            SamplingConfig(max_new_tokens=120, temperature=0.8, top_p=0.95,
                                           repetition_penalty=1.1, seed=0))
    sample_path = out / "samples.txt"
    sample_path.write_text("".join(f"--- prompt {p!r}\n{p}{s}\n\n" for p, s in zip(PROMPTS, samples)), "utf-8")
    print(f"{PROMPTS[0]}{samples[0]}\n")
    summary = {"pretrain": report, "samples": str(sample_path), "wall_seconds": round(time.time() - t0, 1)}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    bpb = report["validation_by_corpus"].get("tinyshakespeare", {}).get("val_bpb")
    print(f"[3/3] done in {(time.time() - t0) / 60:.1f} min")
    if bpb is not None:
        print(f"  validation bits-per-byte (tinyshakespeare, last 10%): {bpb:.3f}")
    print(f"  report:     {out / 'report.json'}\n  checkpoint: {report['model_dir']}\n  samples:    {sample_path}")
    print(f"  next:       scratchlm generate --model {report['model_dir']} \"ROMEO:\"")
    return 0
