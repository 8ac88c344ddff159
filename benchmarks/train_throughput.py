"""Training throughput: our decoder through the real training loop vs nanoGPT's recipe, side by side.

    python benchmarks/train_throughput.py --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 \
        --batch-size 64 --vocab-size 65 --json

Each variant runs in its own process (so peak RSS is its own): a few warm-up optimizer steps (compile
happens there), then timed steps. tokens/s = batch * block / seconds per optimizer step; MFU = FLOPs/token
* tokens/s / the matmul peak measured here in the variant's compute dtype.

Variants:
  nanogpt_cpu          nanoGPT's CPU recipe: fp32, no compile (the reference, 1.0x)
  nanogpt_bf16_compile nanoGPT with bf16 autocast + torch.compile (only where bf16 is fast in hardware)
  ours_eager           our model + Trainer step, default precision, no compile
  ours_default         exactly what `scratchlm pretrain` does by default on this machine
  ours_compile         our Trainer step with torch.compile
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ["nanogpt_cpu", "nanogpt_bf16_compile", "ours_eager", "ours_default", "ours_compile"]


class _ArrayShard:
    """Just enough of TokenShard for LMTask: a token array."""

    def __init__(self, tokens, prefix="synthetic"):
        self.tokens, self.prefix = tokens, prefix


def _run_ours(args, compile_mode: str):
    import numpy as np
    import torch

    from scratchlm.model.transformer import ModelConfig, Transformer
    from scratchlm.tasks.lm import LMTask
    from scratchlm.train.config import TrainConfig
    from scratchlm.train.trainer import Trainer

    torch.manual_seed(0)
    mlp_hidden = args.mlp_hidden or int(round(8 * args.n_embd / 3 / 64)) * 64
    cfg = ModelConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                      n_head=args.n_head, n_kv_head=args.n_kv_head or args.n_head, n_embd=args.n_embd,
                      mlp_hidden=mlp_hidden, dropout=0.0)
    model = Transformer(cfg)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, args.vocab_size, size=2_000_000, dtype=np.int64).astype(np.uint16)
    task = LMTask(model, _ArrayShard(tokens), None, block_size=args.block_size, seed=0)
    tcfg = TrainConfig(out_dir="/tmp/scratchlm-bench", micro_batch_size=args.batch_size, max_steps=10**6,
                       compile=compile_mode, precision=args.precision, progress=False, tensorboard=False,
                       warmup_steps=10, lr=1e-3)
    trainer = Trainer(tcfg, task, run_config={}, flops_per_token=model.flops_per_token())
    trainer._build()
    step = lambda: trainer._train_step()  # noqa: E731  (the loop's own optimizer step)
    return step, model.flops_per_token(), trainer.dtype, model.num_params(), trainer.compiled


def _run_nanogpt(args, bf16_compile: bool):
    import numpy as np
    import torch
    from nanogpt_reference import GPT, GPTConfig, make_step

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=args.block_size, vocab_size=args.vocab_size, n_layer=args.n_layer,
                          n_head=args.n_head, n_embd=args.n_embd))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    dtype = torch.bfloat16 if bf16_compile else torch.float32
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16_compile else nullcontext()
    fwd = torch.compile(model) if bf16_compile else model
    step_impl = make_step(model, opt, ctx)
    if bf16_compile:
        def step_impl(x, y, _ctx=ctx):  # nanoGPT train.py with compile=True: the compiled model is called
            with _ctx:
                loss = fwd(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
    data = torch.from_numpy(np.random.default_rng(0).integers(0, args.vocab_size, size=2_000_000))

    def step():
        ix = torch.randint(len(data) - args.block_size - 1, (args.batch_size,))
        x = torch.stack([data[i:i + args.block_size] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + args.block_size] for i in ix])
        return step_impl(x, y)

    return step, model.flops_per_token(), dtype, model.num_params(non_embedding=False), bf16_compile


def _profile(step, steps: int) -> list[dict]:
    """Where an optimizer step's CPU time goes: the top operators by self time over ``steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 4), "calls": e.count} for e in rows[:15]]


def run_variant(args) -> dict:
    import torch

    from scratchlm.train.hardware import cpu_has_fast_bf16, measure_matmul_peak, peak_rss_mb

    if args.threads:
        torch.set_num_threads(args.threads)
    v = args.variant
    if v == "nanogpt_bf16_compile" and not (cpu_has_fast_bf16() or args.force_bf16):
        return {"variant": v, "skipped": "this CPU has no bf16 matmul hardware (AVX-512 BF16 / AMX); "
                                         "bf16 would run ~100x slower than fp32"}
    if v.startswith("nanogpt"):
        step, fpt, dtype, nparams, compiled = _run_nanogpt(args, v == "nanogpt_bf16_compile")
    else:
        mode = {"ours_eager": "off", "ours_default": "auto", "ours_compile": "on"}[v]
        step, fpt, dtype, nparams, compiled = _run_ours(args, mode)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    profile = _profile(step, args.profile) if args.profile else None
    tokens = args.batch_size * args.block_size
    peak = measure_matmul_peak(torch.device("cpu"), dtype)
    # also against the fp32 peak: on a CPU with bf16 matmuls the bf16 run can pass 100% of it
    peak_fp32 = peak if dtype == torch.float32 else measure_matmul_peak(torch.device("cpu"), torch.float32)
    tps = tokens / median
    return {"variant": v, "tokens_per_s": round(tps, 1), "step_s_median": round(median, 3),
            "step_s_min": round(times[0], 3), "mfu": round(fpt * tps / peak, 4),
            "peak_gflops": round(peak / 1e9, 1), "mfu_vs_fp32_peak": round(fpt * tps / peak_fp32, 4),
            "fp32_peak_gflops": round(peak_fp32 / 1e9, 1), "compute_dtype": str(dtype).replace("torch.", ""),
            "compile": bool(compiled), "params": nparams, "flops_per_token": fpt,
            "warmup_s": round(warm, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
            "threads": torch.get_num_threads(), **({"profile": profile} if profile else {})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--n-kv-head", type=int, default=None, help="grouped-query attention (default: n_head)")
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=65)
    p.add_argument("--mlp-hidden", type=int, default=None, help="default 8/3 * n_embd (parameter-matched)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    p.add_argument("--force-bf16", action="store_true", help="run bf16 variants even without bf16 hardware")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--profile", type=int, default=0, help="profile this many extra steps; print the top operators")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:  # child process
        print(json.dumps(run_variant(args)))
        return
    import torch

    from scratchlm.train.hardware import cpu_has_fast_bf16, measure_matmul_peak

    results = []
    base_args = [a for a in sys.argv[1:] if a not in ("--json",)]
    for v in args.variants:
        out = subprocess.run([sys.executable, __file__, *base_args, "--variant", v], capture_output=True,
                             text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if out.returncode != 0:
            results.append({"variant": v, "error": out.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            print(json.dumps(results[-1]), file=sys.stderr)
    ref = next((r for r in results if r["variant"] == "nanogpt_cpu" and "tokens_per_s" in r), None)
    for r in results:
        if ref and "tokens_per_s" in r:
            r["speedup_vs_nanogpt_cpu"] = round(r["tokens_per_s"] / ref["tokens_per_s"], 2)
    ours = next((r for r in results if r["variant"] == "ours_default" and "tokens_per_s" in r), None)
    summary = {
        "config": {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size",
                                                   "vocab_size", "precision")},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "fast_bf16": cpu_has_fast_bf16(),
        "matmul_peak_gflops": {"fp32": round(measure_matmul_peak(torch.device("cpu"), torch.float32) / 1e9, 1)},
        "variants": results,
    }
    if cpu_has_fast_bf16():
        summary["matmul_peak_gflops"]["bf16"] = round(measure_matmul_peak(torch.device("cpu"), torch.bfloat16) / 1e9, 1)
    if ours:  # the headline fields, for `--json | jq .tokens_per_s`
        summary.update(tokens_per_s=ours["tokens_per_s"], mfu=ours["mfu"], peak_rss_mb=ours["peak_rss_mb"],
                       speedup_vs_nanogpt_cpu=ours.get("speedup_vs_nanogpt_cpu"))
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"\n{'variant':<22}{'tok/s':>10}{'x nanoGPT':>10}{'MFU':>8}{'MFU/fp32':>9}{'dtype':>10}{'compile':>8}"
          f"{'RSS MB':>9}")
    for r in results:
        if "tokens_per_s" in r:
            print(f"{r['variant']:<22}{r['tokens_per_s']:>10,.0f}{r.get('speedup_vs_nanogpt_cpu', 0):>10.2f}"
                  f"{r['mfu']:>8.1%}{r['mfu_vs_fp32_peak']:>9.1%}{r['compute_dtype']:>10}{str(r['compile']):>8}"
                  f"{r['peak_rss_mb']:>9,.0f}")
        else:
            print(f"{r['variant']:<22} {r.get('skipped') or r.get('error')}")
    for r in results:
        if r.get("profile"):
            print(f"\n{r['variant']}: share of CPU self time by operator ({args.profile} steps)")
            for row in r["profile"]:
                print(f"  {row['share']:6.1%}  {row['calls']:>6}  {row['op']}")


if __name__ == "__main__":
    main()
