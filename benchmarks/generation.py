"""Generation throughput: decode tokens/s, time to first token and peak memory, with and without KV cache.

    python benchmarks/generation.py --preset 6m --new-tokens 256 --batch-sizes 1 8
    python benchmarks/generation.py --model runs/my-run --batch-sizes 1 4 --json

The default model is randomly initialised from a preset (its block_size is raised if the prompt plus the new
tokens do not fit). Every row generates exactly ``--new-tokens`` tokens (no eos), greedy.

* decode tok/s: tokens generated after the first one, across the batch, per second after the first token
  (``batch * (new_tokens - 1) / (t_end - t_first)``); the no-cache path re-runs the whole sequence per step.
* TTFT: from the call to the first token of the batch (prefill + first sample).
* peak RSS: the process's high-water mark so far (``resource.getrusage``; psutil is not needed), so it
  never goes down from one row of the table to the next; on CUDA also the peak allocated GPU memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from scratchlm.infer.generate import SamplingConfig, generate  # noqa: E402
from scratchlm.model.transformer import PRESETS, Transformer, preset  # noqa: E402
from scratchlm.train.hardware import peak_rss_mb  # noqa: E402


def load_model(folder: str) -> Transformer:
    """A trained model folder, loaded and checked like everywhere else in scratchlm."""
    from scratchlm.model.folder import load_model as project_load

    return project_load(folder).model


def bench_one(model: Transformer, batch: int, prompt_len: int, new_tokens: int, use_cache: bool,
              device: torch.device) -> dict:
    prompts = torch.randint(0, model.cfg.vocab_size, (batch, prompt_len)).tolist()
    cfg = SamplingConfig(max_new_tokens=new_tokens, temperature=0.0, use_cache=use_cache)
    first: list[float] = []

    def on_token(row: int, tok: int) -> None:
        if not first:
            if device.type == "cuda":
                torch.cuda.synchronize()
            first.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = generate(model, prompts, cfg, callback=on_token)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    n = sum(len(r) for r in out)
    decode_s = t1 - first[0]
    row = dict(batch=batch, kv_cache=use_cache, prompt_len=prompt_len, new_tokens=n,
               ttft_ms=(first[0] - t0) * 1e3, total_s=t1 - t0,
               decode_tok_s=(n - batch) / decode_s if decode_s > 0 and n > batch else float("nan"),
               peak_rss_mb=peak_rss_mb())
    if device.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", default="6m", choices=list(PRESETS), help="random-init model preset")
    src.add_argument("--model", help="checkpoint folder of a trained model")
    ap.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the preset model")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-baseline", action="store_true", help="skip the (slow) no-KV-cache runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model:
        model = load_model(args.model)
    else:
        need = args.prompt_len + args.new_tokens
        block = max(PRESETS[args.preset].get("block_size", 256), need)
        model = Transformer(preset(args.preset, vocab_size=args.vocab_size, block_size=block))
    model = model.to(device=device, dtype=getattr(torch, args.dtype)).eval()

    results = []
    for batch in args.batch_sizes:
        for use_cache in (True,) if args.no_baseline else (True, False):
            # untimed warm-up with the same shapes (allocator, kernel selection)
            generate(model, [[1] * args.prompt_len] * batch,
                     SamplingConfig(max_new_tokens=2, temperature=0.0, use_cache=use_cache))
            results.append(bench_one(model, batch, args.prompt_len, args.new_tokens, use_cache, device))
            if not args.json:
                print(f"  done: batch {batch}, kv_cache={use_cache}", file=sys.stderr)

    info = dict(model=args.model or f"preset:{args.preset}", params=model.num_params(),
                device=str(device), dtype=args.dtype, threads=torch.get_num_threads(),
                torch=torch.__version__, config={k: v for k, v in asdict(model.cfg).items() if k != "extra"})
    if args.json:
        print(json.dumps({**info, "results": results}))
        return 0
    print(f"{info['model']}  {info['params'] / 1e6:.2f}M params  {info['device']} {info['dtype']}  "
          f"threads={info['threads']}  prompt={args.prompt_len}  new={args.new_tokens}")
    cols = ["batch", "kv_cache", "decode_tok_s", "ttft_ms", "total_s", "peak_rss_mb"]
    if device.type == "cuda":
        cols.append("peak_gpu_mb")
    print("  ".join(f"{c:>12}" for c in cols))
    for r in results:
        print("  ".join(f"{r[c]:>12.1f}" if isinstance(r[c], float) else f"{r[c]!s:>12}" for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
