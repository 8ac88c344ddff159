"""Decode tokens/s of our own forms at several batch sizes, in one process, the models taking turns.

    scratchlm quantize --model base --out /tmp/base-int8
    python benchmarks/decode_batch.py --model base --int8 /tmp/base-int8 --batches 1,8,32

Greedy, 64-token random prompts (shorter where the context requires), ``--new-tokens`` new tokens per row (eos
ignored). Decode time = time(N new tokens) - time(1 new token), so the prefill is not counted; best of
``--repeat``. ``--engine torch`` times the PyTorch path instead of the native engine. (``benchmarks/inference.py``
compares against other engines at batch 1 and 8; this one adds the larger batches for our forms.)
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="fp32 (or bf16-stored) model folder or published name")
    p.add_argument("--int8", help="its int8 folder (scratchlm quantize), timed beside it")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engine", choices=("auto", "native", "torch"), default="auto")
    args = p.parse_args(argv)
    os.environ["SCRATCHLM_DECODE_ENGINE"] = args.engine
    import torch

    from scratchlm.infer.generate import SamplingConfig, generate
    from scratchlm.model.folder import load_model

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    forms = {"fp32": load_model(args.model).model.eval()}
    g = torch.Generator().manual_seed(0)
    vocab = forms["fp32"].cfg.vocab_size
    length = max(1, min(64, forms["fp32"].cfg.block_size - args.new_tokens))
    prompts = [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(max(batches))]
    if args.int8:
        forms["int8"] = load_model(args.int8).model.eval()

    def timed(model, rows, n):
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            generate(model, rows, SamplingConfig(max_new_tokens=n, temperature=0))
            best = min(best, time.perf_counter() - t)
        return best

    print(f"decode tokens/s, {args.threads} threads, engine {args.engine}, {args.new_tokens} new tokens per row")
    print("| batch | " + " | ".join(forms) + (" | int8 / fp32 |" if "int8" in forms else " |"))
    print("|---:|" + "---:|" * (len(forms) + ("int8" in forms)))
    for b in batches:
        speed = {}
        for name, model in forms.items():
            generate(model, prompts[:b], SamplingConfig(max_new_tokens=2, temperature=0))  # warm-up, packs built
            dt = timed(model, prompts[:b], args.new_tokens) - timed(model, prompts[:b], 1)
            speed[name] = b * (args.new_tokens - 1) / max(dt, 1e-9)
        ratio = f" {speed['int8'] / speed['fp32']:.2f}x |" if "int8" in speed else ""
        print(f"| {b} | " + " | ".join(f"{v:,.0f}" for v in speed.values()) + " |" + ratio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
