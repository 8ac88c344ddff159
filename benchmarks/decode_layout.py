"""Why the decode step packs its weights: one-row matmuls (a batch-1 decode step) over a model's weight
shapes, with the weights as ``nn.Linear`` keeps them (row-major ``(out, in)``) or column-major, each matrix
alone or with q/k/v and gate/up fused, as ``scratchlm.infer.decode_pack`` does.

    python benchmarks/decode_layout.py --model runs/imdb_lm/model --threads 2

Prints milliseconds per decode step spent in the matmuls alone (every block's projections and the output
head, random weights of the model's shapes, best of 7 timings of 100 steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scratchlm.model.transformer import PRESETS, ModelConfig  # noqa: E402


def shapes(cfg: ModelConfig, fused: bool) -> list[tuple[int, int]]:
    d, q, kv, h = cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim, cfg.mlp_hidden
    block = [(q + 2 * kv, d), (d, q), (2 * h, d), (d, h)] if fused else \
        [(q, d), (kv, d), (kv, d), (d, q), (h, d), (h, d), (d, h)]
    return block * cfg.n_layer + [(cfg.vocab_size, d)]


def time_step(weights: list[torch.Tensor], steps: int = 100, reps: int = 7) -> float:
    xs = {w.shape[1]: torch.randn(1, 1, w.shape[1]) for w in weights}
    calls = [(xs[w.shape[1]], w) for w in weights]
    for _ in range(10):
        for x, w in calls:
            F.linear(x, w)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(steps):
            for x, w in calls:
                F.linear(x, w)
        best = min(best, (time.perf_counter() - t) / steps * 1e3)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="a model folder (its config.json); default: --preset")
    p.add_argument("--preset", default="6m", choices=sorted(PRESETS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model:
        from scratchlm.model import checkpoint as ckpt

        fields = ckpt.read_config(ckpt.resolve(args.model))["model"]
        cfg = ModelConfig(**{k: v for k, v in fields.items() if k in ModelConfig.__dataclass_fields__})
    else:
        cfg = ModelConfig(**PRESETS[args.preset])
    torch.manual_seed(0)
    print(f"{args.model or args.preset}: {cfg.n_layer} blocks x {cfg.n_embd}, vocab {cfg.vocab_size}, "
          f"{args.threads} threads; ms per decode step in the matmuls")
    base = None
    for fused in (False, True):
        ws = [torch.randn(o, i) * 0.02 for o, i in shapes(cfg, fused)]
        for layout in ("row-major", "column-major"):
            w2 = ws if layout == "row-major" else [w.t().contiguous().t() for w in ws]
            ms = time_step(w2)
            base = base or ms
            print(f"  {'fused' if fused else 'separate':8} {layout:13} {ms:7.3f} ms  ({base / ms:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
