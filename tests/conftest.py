"""Shared fixtures: a tiny prepared tinyshakespeare dataset, a tiny model, and helpers to train it.

Everything here is sized for 2 shared CPU cores: a 384-token BPE, 2 layers of width 32, context 32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# CI sets SCRATCHLM_DATA_DIR; a developer checkout next to the shared data folder works without it.
if not os.environ.get("SCRATCHLM_DATA_DIR") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["SCRATCHLM_DATA_DIR"] = str(REPO.parent / "shared" / "data")

# The CPUs are shared: with 2 intra-op threads and another busy process, every tiny op waits on a thread
# barrier (measured 75x slower than one thread). Tests use one thread; subprocesses get OMP_NUM_THREADS=1.
torch.set_num_threads(1)

VOCAB = 384
# The same dataset recipe as command-line overrides (subprocess runs) and as a DataConfig (in-process).
DATA_OVERRIDES = [
    "data.corpora=tinyshakespeare",
    f"data.vocab_size={VOCAB}",
    "data.clean.unicode_form=none",
    "data.clean.strip_html=false",
    "data.clean.normalize_whitespace=false",
    "data.clean.dedup=false",
]
MODEL_OVERRIDES = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32"]
TRAIN_OVERRIDES = [
    "train.device=cpu",
    "train.precision=fp32",
    "train.compile=off",
    "train.progress=false",
    "train.tensorboard=false",
    "train.threads=1",
    "train.micro_batch_size=4",
    "train.warmup_steps=2",
    "train.eval_batches=2",
    "train.log_interval=1",
    "final_eval=",
]


def shakespeare_dir() -> Path | None:
    root = os.environ.get("SCRATCHLM_DATA_DIR")
    if root and (Path(root) / "tinyshakespeare" / "input.txt").is_file():
        return Path(root)
    return None


requires_data = pytest.mark.skipif(shakespeare_dir() is None,
                                   reason="SCRATCHLM_DATA_DIR does not hold tinyshakespeare")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """tinyshakespeare -> 384-token BPE -> train/val shards, prepared once per test session."""
    if shakespeare_dir() is None:
        pytest.skip("SCRATCHLM_DATA_DIR does not hold tinyshakespeare")
    from scratchlm.config import apply_overrides, from_dict, parse_override
    from scratchlm.data.prepare import DataConfig, prepare

    data = apply_overrides({}, [parse_override(o) for o in DATA_OVERRIDES])["data"]
    cfg = from_dict(DataConfig, data)
    return prepare(cfg, tmp_path_factory.mktemp("data"), progress=False, log=lambda *a, **k: None)


def tiny_model_config(vocab_size: int = VOCAB, **kw):
    from scratchlm.model.transformer import ModelConfig

    return ModelConfig(**{"vocab_size": vocab_size, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32,
                          **kw})


def tiny_train_config(out_dir, **kw):
    from scratchlm.train.config import TrainConfig

    defaults = dict(out_dir=str(out_dir), device="cpu", precision="fp32", compile="off", progress=False,
                    tensorboard=False, micro_batch_size=4, max_steps=10, warmup_steps=2, eval_interval=5,
                    eval_batches=2, log_interval=1, save_interval=1000, seed=1234)
    return TrainConfig(**{**defaults, **kw})


def lm_task(prepared, seed: int = 1234, **model_kw):
    """A fresh tiny Transformer (weights seeded) on the prepared shards."""
    from scratchlm.model.transformer import Transformer
    from scratchlm.tasks.lm import LMTask, token_byte_lengths

    torch.manual_seed(seed)
    model = Transformer(tiny_model_config(prepared.tokenizer.vocab_size, **model_kw))
    return LMTask(model, prepared.train, prepared.val, block_size=model.cfg.block_size, seed=seed,
                  token_bytes=token_byte_lengths(prepared.tokenizer))


def make_trainer(prepared, out_dir, *, task=None, model_kw=None, **train_kw):
    from scratchlm.train.trainer import Trainer

    task = task or lm_task(prepared, **(model_kw or {}))
    cfg = tiny_train_config(out_dir, **train_kw)
    run_config = {"task": "lm", "tokenizer_fingerprint": prepared.tokenizer.fingerprint,
                  "model": {k: v for k, v in vars(task.model.cfg).items()}}
    return Trainer(cfg, task, run_config=run_config, tokenizer=prepared.tokenizer)


def read_rows(out_dir, kind: str = "train") -> list[dict]:
    path = Path(out_dir) / "metrics.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict:
    """Environment for CLI subprocesses: offline, a session cache, one thread each, repo importable."""
    if shakespeare_dir() is None:
        pytest.skip("SCRATCHLM_DATA_DIR does not hold tinyshakespeare")
    return subprocess_env(tmp_path_factory.mktemp("cache"))


def subprocess_env(cache_dir) -> dict:
    env = dict(os.environ)
    env.update(SCRATCHLM_OFFLINE="1", SCRATCHLM_CACHE_DIR=str(cache_dir), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1")
    env.pop("SCRATCHLM_DEBUG", None)
    return env


def cli_command(out_dir, *extra: str) -> list[str]:
    """``python -m scratchlm.cli pretrain`` on the tiny recipe, with ``extra`` overrides (key=value)."""
    return [sys.executable, "-m", "scratchlm.cli", "pretrain",
            *DATA_OVERRIDES, *MODEL_OVERRIDES, *TRAIN_OVERRIDES, f"train.out_dir={out_dir}", *extra]


def run_cli(out_dir, *extra: str, env=None, timeout: float = 120, check: bool = True):
    proc = subprocess.run(cli_command(out_dir, *extra), env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"pretrain failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_lm_dir(prepared, tmp_path_factory) -> Path:
    """A saved tiny decoder (seeded random weights) with the prepared tokenizer: an `init` for fine-tuning."""
    from scratchlm.config import to_dict
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.model.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(tiny_model_config(prepared.tokenizer.vocab_size, block_size=64))
    folder = tmp_path_factory.mktemp("tiny_lm") / "model"
    config = {"task": "lm", "tokenizer_fingerprint": prepared.tokenizer.fingerprint, "model": to_dict(model.cfg),
              "data": {"corpora": [{"source": "tinyshakespeare", "split": "train"}]}}
    ckpt.save_checkpoint(folder, model_tensors=ckpt.model_state(model), config=config, tokenizer=prepared.tokenizer)
    return folder


@pytest.fixture(scope="session")
def task_folders(prepared, tiny_lm_dir, tmp_path_factory) -> dict[str, Path]:
    """Tiny model folders of every task (seeded random weights, saved without training): lm, a classifier
    (clf), a translation (mt) and a summarization (sum) model."""
    from serve_utils import save_classifier, save_seq2seq

    root = tmp_path_factory.mktemp("task_models")
    tok = prepared.tokenizer
    return {"lm": tiny_lm_dir, "clf": save_classifier(root / "clf" / "model", tok),
            "mt": save_seq2seq(root / "mt" / "model", tok, "translate"),
            "sum": save_seq2seq(root / "sum" / "model", tok, "summarize")}


def write_sentiment_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    """A small two-class CSV (keyword sentiment) with a header row text,label."""
    import random

    rng = random.Random(seed)
    good = ["good", "great", "lovely", "fine", "superb"]
    bad = ["bad", "awful", "dull", "poor", "boring"]
    filler = ["the", "film", "was", "a", "plot", "and", "actors", "very", "quite", "story"]
    rows = ["text,label"]
    for i in range(n):
        label = i % 2
        words = rng.sample(filler, 5) + [rng.choice(good if label else bad) for _ in range(2)]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)} {i},{'pos' if label else 'neg'}")
    path.write_text("\n".join(rows) + "\n", "utf-8")
    return path


def write_translation_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """A toy en->zh 'translation' jsonl (columns en, zh): each English word maps to one Chinese character."""
    import random

    words = {"cat": "猫", "dog": "狗", "big": "大", "red": "红", "sun": "日", "tree": "树", "sea": "海", "bird": "鸟"}
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ws = rng.choices(list(words), k=rng.randint(2, 4))
        rows.append({"en": " ".join(ws) + f" {i}", "zh": "".join(words[w] for w in ws) + f"{i}"})
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    return path


def right_pad(seqs, T: int | None = None, fill=0):
    """(idx, mask) of right-padded token sequences; ``fill``: the pad id, or a (B, T) tensor of what the pad
    positions hold."""
    T = T or max(len(s) for s in seqs)
    idx = fill.clone() if torch.is_tensor(fill) else torch.full((len(seqs), T), fill)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return idx, mask


@torch.no_grad()
def alone(model, seqs) -> torch.Tensor:
    """Each sequence through ``model`` on its own, batch 1, stacked."""
    return torch.cat([model(s[None]) for s in seqs])


def classify_overrides(out_root, init, csv) -> list[str]:
    """A tiny classification recipe as dotted overrides: the sentiment CSV with seeded 20% validation and test
    carve-outs, 32 tokens per text, 30 steps of 16 examples on one CPU thread."""
    return [f"init={init}", f"data.dataset={csv}", "data.test_split=null", "data.test_fraction=0.2",
            "data.val_fraction=0.2", f"out_root={out_root}", "max_length=32", "epochs=null", "train.max_steps=30",
            "train.micro_batch_size=16", "train.lr=3e-3", "train.warmup_steps=3", "train.eval_interval=10",
            "train.save_interval=10", "train.progress=false", "train.tensorboard=false", "train.device=cpu",
            "train.precision=fp32", "train.threads=1", "train.early_stopping_patience=0", "head_dropout=0.0"]


# ---- the HTTP server tests (test_serve, test_serve_hardening): a module's `models` fixture, served

def serve_settings(**kw):
    """Server settings sized for the tiny test models; ``kw`` overrides any field."""
    from scratchlm.serve.settings import ServeSettings

    base = dict(max_batch_size=8, max_queue=16, request_timeout_s=60, max_items=16, max_tokens_limit=2000,
                max_input_chars=5000, max_body_bytes=64 * 1024, default_max_tokens=16)
    return ServeSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def server_settings():
    return serve_settings()


@pytest.fixture(scope="module")
def server(models, server_settings):
    """A real uvicorn server on loopback serving the requesting module's ``models`` fixture."""
    from serve_utils import ThreadServer

    from scratchlm.serve.app import create_app

    with ThreadServer(create_app(models, server_settings)) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
