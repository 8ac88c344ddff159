"""Scaling study for the base model: held-out bits-per-byte against training FLOPs and wall-clock seconds.

Trains every (size, vocabulary) pair of the base recipe for every FLOP budget, each run a real
``scratchlm pretrain`` on the recipe's corpora with a step budget fitted to its FLOPs (so every run ends
its cosine decay), then plots the held-out curves and prints the table that docs/scaling.md quotes:

    python benchmarks/scaling.py --out runs/scaling            # the study in docs/scaling.md
    python benchmarks/scaling.py --out runs/scaling --plot-only

Runs are 1-thread processes, ``--parallel`` at a time (2 on a 2-core machine), so seconds are CPU-seconds
of one core. Each vocabulary's data is prepared once and shared by its runs. A finished run is not
trained again (its report.json is read), so the study can be stopped and continued.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scratchlm.model.transformer import ModelConfig, Transformer  # noqa: E402


def parse_size(text: str) -> dict:
    """``LxD`` (layers x width) -> model fields; 64-wide heads, half as many K/V heads where that divides."""
    layers, width = (int(v) for v in text.lower().split("x"))
    n_head = max(1, width // 64)
    n_kv = n_head // 2 if n_head % 2 == 0 else n_head
    return {"n_layer": layers, "n_embd": width, "n_head": n_head, "n_kv_head": n_kv}


def model_stats(size: dict, vocab: int, block: int) -> tuple[int, float]:
    cfg = ModelConfig(vocab_size=vocab, block_size=block, **size)
    model = Transformer(cfg)
    return model.num_params(), model.flops_per_token()


def prepare(args, vocab: int) -> Path:
    folder = Path(args.out) / f"data_v{vocab}"
    if (folder / "prepare.json").exists():
        return folder
    cmd = [sys.executable, "-m", "scratchlm", "prepare", "--config", args.recipe, "--out", str(folder),
           f"--data.vocab_size={vocab}"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return folder


def run_one(args, name: str, size: dict, vocab: int, budget: float, data: Path) -> dict:
    run_dir = Path(args.out) / name
    report = run_dir / "report.json"
    if report.exists():
        return json.loads(report.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "data").exists():
        (run_dir / "data").symlink_to(data.resolve())
    _, fpt = model_stats(size, vocab, args.block)
    tokens_per_step = args.batch * args.block
    steps = max(20, int(budget / (fpt * tokens_per_step)))
    cmd = [sys.executable, "-m", "scratchlm", "pretrain", "--config", args.recipe,
           *(f"--model.{k}={v}" for k, v in size.items()),
           f"--model.block_size={args.block}", f"--data.vocab_size={vocab}",
           f"--train.out_dir={run_dir}", f"--train.max_steps={steps}", "--train.max_time_s=none",
           f"--train.micro_batch_size={args.batch}", f"--train.global_batch_size={args.batch}",
           f"--train.lr={args.lr}", f"--train.warmup_steps={max(5, steps // 20)}", "--train.schedule=cosine",
           "--train.threads=1", "--train.compile=on", "--train.progress=false", "--train.tensorboard=false",
           f"--train.eval_interval={steps}", f"--train.save_interval={steps}",
           f"--train.eval_batches={args.eval_batches}",
           "--final_eval=[]", f"--final_eval_max_tokens={args.eval_tokens}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    with open(run_dir / "log.txt", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    print(f"done {name}: {steps} steps in {time.time() - t0:.0f} s", flush=True)
    return json.loads(report.read_text())


def summarize(name: str, size: dict, vocab: int, budget: float, report: dict, block: int) -> dict:
    params, fpt = model_stats(size, vocab, block)
    per_corpus = report.get("validation_by_corpus", {})
    bpbs = [m["val_bpb"] for m in per_corpus.values() if "val_bpb" in m]
    return {"name": name, "layers": size["n_layer"], "width": size["n_embd"], "vocab": vocab, "params": params,
            "budget_flops": budget, "flops": fpt * report["tokens_seen"], "tokens": report["tokens_seen"],
            "tokens_per_param": report["tokens_seen"] / params, "seconds": report["train_seconds"],
            "val_bpb": report["last_eval"].get("val_bpb"),
            "mean_corpus_bpb": sum(bpbs) / len(bpbs) if bpbs else None,
            "by_corpus": {k: round(v.get("val_bpb", math.nan), 4) for k, v in per_corpus.items()}}


def fit_and_extrapolate(rows: list[dict], target_flops: float, vocab: int, block: int) -> dict | None:
    """Chinchilla's approach 3 on our points: fit bpb(N, D) = E + A / N^alpha + B / D^beta to the runs of
    one vocabulary, then pick the shape whose predicted bpb is lowest at ``target_flops``.

    With a handful of short runs the fit is loose; the table prints it beside the D = 20 N rule of thumb."""
    import numpy as np
    from scipy.optimize import least_squares

    pts = [r for r in rows if r["vocab"] == vocab and r["val_bpb"]]
    if len(pts) < 6:
        return None
    n = np.array([r["params"] for r in pts], dtype=float)
    d = np.array([r["tokens"] for r in pts], dtype=float)
    y = np.array([r["val_bpb"] for r in pts], dtype=float)

    def predict(theta, n, d):
        e, log_a, alpha, log_b, beta = theta
        return e + np.exp(log_a) / n ** alpha + np.exp(log_b) / d ** beta

    fit = least_squares(lambda t: predict(t, n, d) - y, x0=[1.0, 3.0, 0.3, 5.0, 0.3],
                        bounds=([0.0, -10, 0.05, -10, 0.05], [3.0, 30, 1.0, 30, 1.0]))
    candidates = []
    for layers in (2, 4, 6, 8, 10, 12):
        for width in (128, 192, 256, 320, 384, 448, 512):
            size = parse_size(f"{layers}x{width}")
            params, fpt = model_stats(size, vocab, block)
            tokens = target_flops / fpt
            candidates.append({"shape": f"{layers}x{width}", "params": params, "tokens": tokens,
                               "tokens_per_param": tokens / params,
                               "predicted_bpb": float(predict(fit.x, params, tokens))})
    candidates.sort(key=lambda c: c["predicted_bpb"])
    return {"vocab": vocab, "target_flops": target_flops, "residual_rms": float(np.sqrt(np.mean(fit.fun ** 2))),
            "E": fit.x[0], "alpha": fit.x[2], "beta": fit.x[4], "best": candidates[:5]}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['layers']}x{r['width']} v{r['vocab'] // 1024}k ({r['params'] / 1e6:.1f}M)", []).append(r)
    for label, rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["flops"])
        axes[0].plot([r["flops"] for r in rs], [r["val_bpb"] for r in rs], "o-", label=label)
        axes[1].plot([r["seconds"] for r in rs], [r["val_bpb"] for r in rs], "o-", label=label)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training FLOPs (6N + attention, per token x tokens)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("training seconds (1 thread)")
    for ax in axes:
        ax.set_ylabel("held-out bits/byte (all corpora)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("scratchlm base-model scaling study (python benchmarks/scaling.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="base")
    ap.add_argument("--out", default="runs/scaling")
    ap.add_argument("--sizes", default="4x192,6x256,8x320")
    ap.add_argument("--vocabs", default="16384", help="vocabulary sizes tried at every size")
    ap.add_argument("--extra", default="6x256@8192", help="more SIZE@VOCAB pairs (e.g. a second vocabulary)")
    ap.add_argument("--budgets", default="3.6e13,1e14", help="training FLOPs per run")
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4, help="sequences per optimizer step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-batches", type=int, default=24)
    ap.add_argument("--eval-tokens", type=int, default=32768, help="tokens scored per held-out corpus")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--target-flops", type=float, default=6e15, help="the budget the size is chosen for")
    args = ap.parse_args()

    pairs = [(s, int(v)) for s in args.sizes.split(",") for v in args.vocabs.split(",")]
    pairs += [(p.split("@")[0], int(p.split("@")[1])) for p in args.extra.split(",") if p]
    budgets = [float(b) for b in args.budgets.split(",")]
    jobs = []
    for size_text, vocab in pairs:
        for budget in budgets:
            jobs.append((f"{size_text}_v{vocab}_{budget:.1e}", parse_size(size_text), vocab, budget))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        data = {v: prepare(args, v) for v in sorted({v for _, v in pairs})}
        jobs.sort(key=lambda j: -j[3])  # longest first, so the pool ends together
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda j: run_one(args, *j, data[j[2]]), jobs))
    rows = []
    for name, size, vocab, budget in jobs:
        report = Path(args.out) / name / "report.json"
        if report.exists():
            rows.append(summarize(name, size, vocab, budget, json.loads(report.read_text()), args.block))
    (Path(args.out) / "scaling.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{'run':<28} {'params':>8} {'FLOPs':>9} {'tokens':>9} {'tok/param':>9} {'seconds':>8} {'bpb':>7}")
    for r in sorted(rows, key=lambda r: (r["budget_flops"], r["val_bpb"] or 9)):
        print(f"{r['name']:<28} {r['params'] / 1e6:>7.2f}M {r['flops']:>9.2e} {r['tokens']:>9,} "
              f"{r['tokens_per_param']:>9.2f} {r['seconds']:>8.0f} {r['val_bpb']:>7.4f}")
    for vocab in sorted({r["vocab"] for r in rows}):
        fitted = fit_and_extrapolate(rows, args.target_flops, vocab, args.block)
        if fitted is None:
            continue
        print(f"\nfit bpb = E + A/N^alpha + B/D^beta, vocab {vocab}: E {fitted['E']:.3f}, alpha {fitted['alpha']:.3f}, "
              f"beta {fitted['beta']:.3f}, rms residual {fitted['residual_rms']:.4f}")
        print(f"predicted best shapes at {args.target_flops:.1e} FLOPs:")
        for c in fitted["best"]:
            print(f"  {c['shape']:>6} {c['params'] / 1e6:6.2f}M params  {c['tokens'] / 1e6:7.1f}M tokens "
                  f"({c['tokens_per_param']:5.1f}/param)  bpb {c['predicted_bpb']:.3f}")
        (Path(args.out) / f"fit_v{vocab}.json").write_text(json.dumps(fitted, indent=2) + "\n")
    if rows:
        plot(rows, Path(args.out) / "scaling.png")
        print(f"plot: {Path(args.out) / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
