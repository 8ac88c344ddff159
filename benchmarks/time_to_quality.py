"""Time to quality on tinyshakespeare: validation bits-per-byte reached within the same wall-clock budget.

    python benchmarks/time_to_quality.py --minutes 10 [--only ours|nanogpt] [--json]

nanogpt: nanoGPT's documented CPU recipe (char-level, 4 layers, width 128, context 64, batch 12, lr 1e-3,
  min_lr 1e-4, warmup 100, beta2 0.99, weight decay 0.1, clip 1.0, dropout 0, fp32, no compile), with
  max_iters = lr_decay_iters = 16,000 as in the reference measurement, stopped by the same wall clock.
ours: ``scratchlm pretrain --config shakespeare`` (our default small recipe) with train.max_time_s set to
  the budget.

Both use nanoGPT's split (validation = last 10% of the characters) and are scored the same way at each
evaluation: mean next-token loss over the whole validation text, converted to bits per UTF-8 byte
(tinyshakespeare is ASCII, so a character is a byte). Curves go to ``<out>/curves.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_nanogpt(minutes: float, eval_every_s: float, data_dir: str | None) -> list[dict]:
    from nanogpt_reference import GPT, GPTConfig

    from scratchlm.data.sources import load_texts

    torch.manual_seed(1337)
    text = load_texts("tinyshakespeare", "train", data_dir=data_dir)[0] + \
        load_texts("tinyshakespeare", "validation", data_dir=data_dir)[0]
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = len(data)
    train, val = data[: int(n * 0.9)], data[int(n * 0.9):]
    block, batch, max_iters, lr, min_lr, warmup = 64, 12, 16000, 1e-3, 1e-4, 100
    model = GPT(GPTConfig(block_size=block, vocab_size=len(chars), n_layer=4, n_head=4, n_embd=128, dropout=0.0))
    opt = model.configure_optimizers(0.1, lr, (0.9, 0.99), "cpu")

    def get_lr(it):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        ratio = min(1.0, (it - warmup) / (max_iters - warmup))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    @torch.no_grad()
    def full_val() -> float:
        model.eval()
        starts = torch.arange(0, len(val) - block - 1, block)
        total, count = 0.0, 0
        for i in range(0, len(starts), 64):
            s = starts[i:i + 64]
            x = torch.stack([val[j:j + block] for j in s])
            y = torch.stack([val[j + 1:j + 1 + block] for j in s])
            total += model(x, y).item() * y.numel()
            count += y.numel()
        model.train()
        return total / count

    curve, train_time, next_eval, it = [], 0.0, 0.0, 0
    budget = minutes * 60
    while it < max_iters and train_time < budget:
        if train_time >= next_eval:
            loss = full_val()
            curve.append({"train_seconds": round(train_time, 1), "iter": it, "val_loss": loss,
                          "val_bpb": loss / math.log(2)})
            print(f"nanogpt {train_time:7.1f}s iter {it:6d} val_bpb {loss / math.log(2):.4f}", flush=True)
            next_eval += eval_every_s
        t = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = get_lr(it)
        ix = torch.randint(len(train) - block, (batch,))
        x = torch.stack([train[i:i + block] for i in ix])
        y = torch.stack([train[i + 1:i + 1 + block] for i in ix])
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_time += time.perf_counter() - t
        it += 1
    loss = full_val()
    curve.append({"train_seconds": round(train_time, 1), "iter": it, "val_loss": loss, "val_bpb": loss / math.log(2)})
    print(f"nanogpt final {train_time:.1f}s iter {it} val_bpb {loss / math.log(2):.4f}", flush=True)
    return curve


def run_ours(minutes: float, out: Path, extra: list[str]) -> list[dict]:
    run_dir = out / "ours"
    cmd = [sys.executable, "-m", "scratchlm", "pretrain", "--config", "shakespeare",
           f"--train.out_dir={run_dir}", f"--train.max_time_s={minutes * 60}", "--train.progress=false", *extra]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    curve = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["kind"] == "train":
            last_elapsed = row["elapsed_s"]
        elif row["kind"] == "eval" and "val_bpb" in row:
            curve.append({"train_seconds": round(locals().get("last_elapsed", 0.0), 1), "step": row["step"],
                          "val_loss": row["val_loss"], "val_bpb": row["val_bpb"]})
    report = json.loads((run_dir / "report.json").read_text())
    final = report["validation_by_corpus"]["tinyshakespeare"]
    curve.append({"train_seconds": report["train_seconds"], "step": report["steps"], "final_best_model": True,
                  "val_loss": final["val_loss"], "val_bpb": final["val_bpb"]})
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--only", choices=["ours", "nanogpt"], default=None)
    p.add_argument("--out", default="runs/time_to_quality")
    p.add_argument("--eval-every-s", type=float, default=30.0, help="nanoGPT curve resolution")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true")
    args, extra = p.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves_path = out / "curves.json"
    curves = json.loads(curves_path.read_text()) if curves_path.exists() else {}
    if args.only in (None, "nanogpt"):
        curves["nanogpt_cpu_recipe"] = run_nanogpt(args.minutes, args.eval_every_s, args.data_dir)
    if args.only in (None, "ours"):
        curves["scratchlm_shakespeare"] = run_ours(args.minutes, out, extra)
    curves_path.write_text(json.dumps(curves, indent=1))
    summary = {name: {"final_val_bpb": round(c[-1]["val_bpb"], 4),
                      "best_val_bpb": round(min(r["val_bpb"] for r in c), 4),
                      "train_seconds": c[-1]["train_seconds"]} for name, c in curves.items()}
    summary["minutes"] = args.minutes
    summary["nanogpt_reference_bpb_from_issue"] = 2.16
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
