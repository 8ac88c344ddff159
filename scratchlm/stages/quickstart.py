"""``scratchlm quickstart``: the whole pipeline on real data, sized for a laptop CPU.

tinyshakespeare -> byte-level BPE -> token shards -> a ~3M-parameter Llama-style decoder pretrained for a
few minutes (the training loop at work) -> bits-per-byte on held-out text -> samples with the KV cache. Then
the published base model (``models/base``, pretrained for hours on English and Chinese text) is fine-tuned
into an IMDb sentiment classifier, next to the bag-of-words and GRU baselines on the same reviews, with a
comparison table: what pretraining is worth. Without a published base, the few-minute model is fine-tuned
instead, and the table says so. It ends by printing where the reports, the models and the samples are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import CONFIG_DIR
from ..infer.generate import SamplingConfig, generate_text
from ..model.folder import load_decoder, published_models
from ..train.config import check_budget
from . import classify
from . import pretrain as pretrain_stage
from .pretrain import quiet
from .report import collect_runs, write_report

CONFIG = CONFIG_DIR / "shakespeare.yaml"
PROMPTS = ["ROMEO:\n", "First Citizen:\nWe are", "KING HENRY:\nMy lords,"]


def run(out_dir: str = "runs/quickstart", minutes: float = 4.0, data_dir: str | None = None,
        extra: list[str] | None = None, sentiment_minutes: float = 1.0, sentiment_examples: int = 2000,
        overwrite: bool = False, decoder_minutes: float = 2.5, base: str | None = "base") -> int:
    check_budget("--minutes", minutes)  # before any work: 0 or -1 minutes would train nothing
    check_budget("--sentiment-minutes", sentiment_minutes)
    check_budget("--decoder-minutes", decoder_minutes)
    check_budget("--sentiment-examples", sentiment_examples, integer=True)
    t0 = time.time()
    out = Path(out_dir)
    overrides = [f"train.out_dir={out}", f"train.max_time_s={minutes * 60}", "train.max_steps=100000",
                 "train.eval_interval=200", *(["train.overwrite=true"] if overwrite else []), *(extra or [])]
    cfg = pretrain_stage.build_config(CONFIG, overrides)
    if data_dir:
        cfg.data.data_dir = data_dir
    print(f"[1/4] pretraining a {cfg.model_preset} decoder on {', '.join(c.name for c in cfg.data.corpora)} "
          f"for up to {minutes:g} minutes")
    report = pretrain_stage.run(cfg)
    print("[2/4] sampling with the KV cache")
    loaded = load_decoder(report["model_dir"])
    samples = generate_text(loaded.model, loaded.tokenizer, PROMPTS,
                            SamplingConfig(max_new_tokens=120, temperature=0.8, top_p=0.95,
                                           repetition_penalty=1.1, seed=0))
    sample_path = out / "samples.txt"
    sample_path.write_text("".join(f"--- prompt {p!r}\n{p}{s}\n\n" for p, s in zip(PROMPTS, samples)), "utf-8")
    print(f"{PROMPTS[0]}{samples[0]}\n")
    init, what = report["model_dir"], "the model it just pretrained"
    if base and base in published_models():
        init, what = base, f"the published base model ({published_models()[base]})"
    elif base:
        print(f"      (no published model named {base!r}: fine-tuning the few-minute model instead)")
    print(f"[3/4] sentiment: fine-tuning {what} on {sentiment_examples:,} IMDb reviews for up to "
          f"{decoder_minutes:g} minutes, beside the bag-of-words and GRU baselines ({sentiment_minutes:g} min)")
    runs = sentiment(init, out / "sentiment", sentiment_minutes, sentiment_examples, data_dir,
                     decoder_minutes=decoder_minutes)
    summary = {"pretrain": report, "samples": str(sample_path), "sentiment": runs, "sentiment_init": init,
               "wall_seconds": round(time.time() - t0, 1)}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    bpb = report["validation_by_corpus"].get("tinyshakespeare", {}).get("val_bpb")
    print(f"[4/4] done in {(time.time() - t0) / 60:.1f} min")
    if bpb is not None:
        print(f"  validation bits-per-byte (tinyshakespeare, last 10%): {bpb:.3f}")
    print(f"  report:     {out / 'report.json'}\n  checkpoint: {report['model_dir']}\n  samples:    {sample_path}")
    print(f"  sentiment:  {out / 'sentiment' / 'report.html'}")
    print(f"  next:       scratchlm generate --model {report['model_dir']} \"ROMEO:\"")
    print(f"              scratchlm classify --model {out / 'sentiment' / 'decoder' / 'model'} \"A wonderful film.\"")
    return 0


def sentiment(init: str, out: Path, minutes: float, examples: int, data_dir: str | None, *,
              decoder_minutes: float | None = None) -> list[dict]:
    """The pretrained decoder ``init`` as an IMDb sentiment classifier, and two baselines, on the same reviews."""
    common = [f"init={init}", f"out_root={out}", "data.dataset=imdb", f"data.max_train_examples={examples}",
              f"data.max_val_examples={max(100, examples // 4)}",
              f"data.max_test_examples={max(200, examples // 2)}", "max_length=256", "epochs=null",
              "train.max_steps=100000", "train.eval_interval=50",
              "train.save_interval=100000", "train.progress=false", "train.tensorboard=false",
              "train.early_stopping_patience=0"]
    decoder_minutes = minutes if decoder_minutes is None else decoder_minutes
    reports = []
    # the decoder: the IMDb recipe's batch (32) and weight decay with a learning rate between the recipe's 3e-4
    # and the 1e-3 that shook the finished base's features (validation fell to 78% mid-run); docs/log.md
    for kind, over in (("decoder", ["train.lr=5e-4", "train.warmup_steps=10", "pooling=mean",
                                    "train.global_batch_size=32", "train.weight_decay=0.01",
                                    f"train.max_time_s={decoder_minutes * 60}"]),
                       ("bow", []),
                       ("gru", ["train.lr=3e-3", "train.warmup_steps=10", "rnn.hidden_size=128",
                                f"train.max_time_s={minutes * 60}"])):
        cfg = classify.build_config(None, [*common, f"kind={kind}", f"name={kind}", *over])
        if data_dir:
            cfg.data.data_dir = data_dir
        reports.append(classify.run(cfg, log=quiet))
    title = (f"Quickstart: IMDb sentiment, {examples:,} reviews; the decoder ({init}) {decoder_minutes:g} min, "
             f"the GRU {minutes:g} min")
    write_report(collect_runs([out]), out, title=title)
    print(f"\n  {'model':<10} {'test acc':>9} {'macro F1':>9} {'params':>8} {'train':>7} {'ms/review':>10}")
    for r in sorted(reports, key=lambda r: -r["test"]["accuracy"]):
        print(f"  {r['name']:<10} {r['test']['accuracy']:>9.2%} {r['test']['f1_macro']:>9.3f} "
              f"{r['parameters'] / 1e6:>7.2f}M {r['train_seconds']:>6.0f}s {r['latency_ms_per_example']:>10.2f}")
    print(f"  ({reports[0]['test_split']}; the full recipes: scratchlm finetune classify --config imdb)\n")
    return [{k: r[k] for k in ("name", "kind", "parameters", "train_seconds", "latency_ms_per_example")}
            | {"test_accuracy": r["test"]["accuracy"], "test_f1": r["test"]["f1_macro"]} for r in reports]
