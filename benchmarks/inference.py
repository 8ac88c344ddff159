"""One model in all its forms, side by side: ours fp32 / int8 (the native decode engine), ours fp32 on the
PyTorch path, ours bf16, HF transformers, ONNX Runtime fp32 / int8 and llama.cpp (GGUF).

    python benchmarks/inference.py --model base --classifier imdb-sentiment --threads 2 --accuracy 500

For every form: file size, peak memory (max RSS of the process that ran it: each form runs in its own process),
prefill tokens/s (one prompt), decode tokens/s at batch 1 and 8 (greedy, every row decodes --new-tokens tokens,
eos ignored: decode time = time(N new tokens) - time(1 new token), so the prefill is not counted), and, with
--classifier, classification latency per review at batch 1, reviews/s at batch 32 (length-sorted) and accuracy on
--accuracy IMDb test reviews. The forms take turns --rounds times and each keeps its best speed. llama.cpp runs
through llama-cpp-python's bindings of its C API (batch 8 = 8 sequences in one llama_batch); point
LLAMA_CPP_LIB_PATH at a llama.cpp build to use it. The exported forms are made first in --work (reused when
present) with scratchlm's own export and quantize. Forms whose package is missing are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMS = ("ours-fp32", "ours-int8", "ours-fp32-torch", "ours-bf16", "hf", "onnx-fp32", "onnx-int8", "llama.cpp")
# "ours-fp32" / "ours-int8" decode on the native engine (scratchlm.infer.engine); "ours-fp32-torch" is the same
# fp32 model on the PyTorch path (SCRATCHLM_DECODE_ENGINE=torch), the engine's reference
PROMPT_TEXT = ("I went to see this film on a rainy afternoon with low expectations, and the first half hour "
               "confirmed them: the dialogue is stiff, the plot wanders and the lead seems lost. Then something "
               "changes. ")


# ---- artifacts ----------------------------------------------------------------------------------------
def prepare(model: Path, work: Path, forms: list[str], log=print) -> dict[str, Path]:
    """Export / quantize ``model`` into ``work`` for the forms that need it; returns form -> path."""
    from scratchlm.export import export
    from scratchlm.infer.quantize import quantize_folder

    work.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"ours-fp32": model, "ours-bf16": model, "ours-fp32-torch": model}
    if "ours-int8" in forms:
        paths["ours-int8"] = work / "int8"
        if not (work / "int8" / "manifest.json").exists():
            log(f"quantize -> {work / 'int8'}")
            quantize_folder(model, work / "int8")
    if "hf" in forms:
        paths["hf"] = work / "hf"
        if not (work / "hf" / "config.json").exists():
            log(f"export hf -> {work / 'hf'}")
            export(model, "hf", work / "hf")
    if {"onnx-fp32", "onnx-int8"} & set(forms):
        paths["onnx-fp32"], paths["onnx-int8"] = work / "onnx" / "model.onnx", work / "onnx" / "model.int8.onnx"
        if not paths["onnx-int8"].exists():
            log(f"export onnx -> {work / 'onnx'}")
            export(model, "onnx", work / "onnx", int8=True)
    if "llama.cpp" in forms:
        paths["llama.cpp"] = work / "model.gguf"
        if not paths["llama.cpp"].exists():
            log(f"export gguf -> {paths['llama.cpp']}")
            export(model, "gguf", paths["llama.cpp"])
    return paths


def file_size(form: str, path: Path) -> int:
    if form.startswith("onnx"):
        return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def fp32_size(folder: Path) -> int:
    """Bytes of the folder's weights stored as fp32 (its file may hold bf16)."""
    import math

    from safetensors import safe_open

    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            total += sum(4 * math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


# ---- one form, in its own process ----------------------------------------------------------------------
class Runner:
    """generate(prompts, n) -> new tokens per row (n each, eos ignored); classify(ids) -> logits."""

    def __init__(self, form: str, path: Path, threads: int, classifier: bool) -> None:
        self.form, self.path, self.threads, self.classifier = form, path, threads, classifier
        if form == "ours-fp32-torch":
            os.environ["SCRATCHLM_DECODE_ENGINE"] = "torch"
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        if form.startswith("ours"):
            if classifier:
                from scratchlm.infer.classify import load_classifier

                self.model = load_classifier(path).model
            else:
                from scratchlm.model.folder import load_model

                self.model = load_model(path).model
            if form == "ours-bf16":
                self.model.to(torch.bfloat16)
        elif form == "hf":
            from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

            auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
            self.model = auto.from_pretrained(path, dtype=torch.float32, trust_remote_code=True).eval()
        elif form.startswith("onnx"):
            from scratchlm.export.onnx import OnnxCausalLM, OnnxClassifier

            self.model = (OnnxClassifier if classifier else OnnxCausalLM)(path, threads=threads)
        elif form == "llama.cpp":
            self.model = LlamaCpp(path, threads)
        else:
            raise ValueError(form)

    def generate(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        torch = self.torch
        if self.form.startswith("ours"):
            from scratchlm.infer.generate import SamplingConfig, generate

            return generate(self.model, prompts, SamplingConfig(max_new_tokens=n, temperature=0), eos_id=None)
        if self.form == "hf":
            x = torch.tensor(prompts)
            with torch.inference_mode():
                out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                          do_sample=False, eos_token_id=None, pad_token_id=0)
            return out[:, x.shape[1]:].tolist()
        if self.form.startswith("onnx"):
            return self.model.generate_greedy(prompts, n, stop_at_eos=False)[0]
        return self.model.generate_greedy(prompts, n)

    def classify(self, ids: list[int] | list[list[int]]):
        """Logits of one review (a list of ids) or of a right-padded batch (a list of lists)."""
        torch = self.torch
        rows = ids if ids and isinstance(ids[0], list) else [ids]
        T = max(len(r) for r in rows)
        x = torch.tensor([r + [0] * (T - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
        if self.form.startswith("ours"):
            with torch.inference_mode():
                return self.model(x, mask).float().numpy()
        if self.form == "hf":
            with torch.inference_mode():
                return self.model(input_ids=x, attention_mask=mask).logits.numpy()
        return self.model.logits(x.numpy(), mask.numpy())


class LlamaCpp:
    """Greedy batched decoding on llama.cpp's C API (through llama-cpp-python's bindings): every row is its own
    sequence in one llama_batch, so batch 8 is one llama_decode call per step, as in llama.cpp's batched
    examples."""

    def __init__(self, path: Path, threads: int, n_seq: int = 8, n_ctx: int = 4096) -> None:
        import llama_cpp as lc

        self.lc = lc
        lc.llama_backend_init()
        self.model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cp = lc.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = n_ctx, 512, 512, n_seq
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
        self.batch = lc.llama_batch_init(512, 0, n_seq)

    def _decode(self, rows: list[tuple[int, list[int], int]]) -> list[int]:
        """rows: (sequence, tokens, first position); returns each row's greedy next token."""
        import numpy as np

        b, i, last = self.batch, 0, []
        for seq, toks, start in rows:
            for j, t in enumerate(toks):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = t, start + j, 1, seq
                b.logits[i] = j == len(toks) - 1
                i += 1
            last.append(i - 1)
        b.n_tokens = i
        if self.lc.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        return [int(np.argmax(np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, k),
                                                    shape=(self.n_vocab,)))) for k in last]

    def generate_greedy(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)
        nxt = self._decode([(s, p, 0) for s, p in enumerate(prompts)])
        out = [[t] for t in nxt]
        for k in range(1, n):
            nxt = self._decode([(s, [out[s][-1]], len(p) + k - 1) for s, p in enumerate(prompts)])
            for s, t in enumerate(nxt):
                out[s].append(t)
        return out


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run_lm_form(form: str, path: Path, args) -> dict:
    from scratchlm.model.folder import resolve_model
    from scratchlm.tokenizer import Tokenizer

    tok = Tokenizer.load(resolve_model(args.model))
    ids = tok.encode(PROMPT_TEXT * 40)[:args.prompt_tokens]
    r = Runner(form, path, args.threads, classifier=False)
    r.generate([ids], 2)  # warm-up
    out: dict = {}
    t1 = _timed(lambda: r.generate([ids], 1), args.repeat)
    out["prefill_tok_s"] = len(ids) / t1
    for b in (1, 8):
        try:
            batch = [ids] * b
            tn = _timed(lambda: r.generate(batch, args.new_tokens), args.repeat)  # noqa: B023
            tb1 = t1 if b == 1 else _timed(lambda: r.generate(batch, 1), args.repeat)  # noqa: B023
            out[f"decode_b{b}_tok_s"] = b * (args.new_tokens - 1) / max(tn - tb1, 1e-9)
        except NotImplementedError as e:
            out[f"decode_b{b}_tok_s"] = None
            out.setdefault("notes", []).append(str(e))
    out["greedy_tokens"] = r.generate([ids], 16)[0]
    return out


def imdb_test(n: int, label_values: list, seed: int = 0):
    """A seeded sample of ``n`` IMDb test reviews and their class indices (the classifier's label order)."""
    import numpy as np

    from scratchlm.data.labeled import LabeledDataConfig, read_split

    texts, raw, _ = read_split(LabeledDataConfig(dataset="imdb"), "test")
    idx = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [texts[i] for i in idx], np.asarray([label_values.index(raw[i]) for i in idx])


def run_classifier_form(form: str, path: Path, args) -> dict:
    import numpy as np

    from scratchlm.config import from_dict
    from scratchlm.data.clean import CleanConfig, clean_text
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.tasks.classify import encode_texts
    from scratchlm.tokenizer import Tokenizer

    folder = ckpt.resolve(args.classifier)  # the source model's tokenizer and text preparation
    config, tokenizer = ckpt.read_config(folder), Tokenizer.load(folder)
    clean = from_dict(CleanConfig, config.get("clean") or {})
    texts, labels = imdb_test(max(args.reviews, args.accuracy), list(config["label_values"]))
    rows, _ = encode_texts(tokenizer, [clean_text(t, clean) for t in texts], config["max_length"],
                           config["head_fraction"])
    r = Runner(form, path, args.threads, classifier=True)
    r.classify(rows[0].tolist())
    t0 = time.perf_counter()
    for row in rows[:args.reviews]:
        r.classify(row.tolist())
    out = {"ms_per_review": 1000 * (time.perf_counter() - t0) / args.reviews,
           "mean_review_tokens": float(np.mean([len(x) for x in rows[:args.reviews]]))}
    # batch 32: the reviews sorted by length (as scratchlm's own passes batch them), right-padded
    batch = sorted((row.tolist() for row in rows[:args.batch_reviews]), key=len, reverse=True)
    r.classify(batch[:32])
    t0 = time.perf_counter()
    for i in range(0, len(batch), 32):
        r.classify(batch[i:i + 32])
    out["b32_reviews_per_s"] = len(batch) / (time.perf_counter() - t0)
    if args.accuracy:
        pred = [int(np.argmax(r.classify(row.tolist()))) for row in rows[:args.accuracy]]
        out["accuracy"] = float((np.asarray(pred) == labels[:args.accuracy]).mean())
        out["accuracy_n"] = args.accuracy
    return out


def worker(args) -> None:
    form, path, kind = args.worker, Path(args.path), args.kind
    result: dict = {"form": form}
    try:
        result.update(run_classifier_form(form, path, args) if kind == "classify" else run_lm_form(form, path, args))
    except ImportError as e:
        result["skipped"] = f"{e.name or e} not installed"
    from scratchlm.train.hardware import peak_rss_mb

    result["peak_rss_mb"] = peak_rss_mb()  # KiB on Linux, bytes on macOS: converted there
    print("RESULT " + json.dumps(result))


def run_form(form: str, path: Path, kind: str, args, accuracy: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", form, "--path", str(path), "--kind", kind,
           "--model", str(args.model), "--threads", str(args.threads), "--prompt-tokens", str(args.prompt_tokens),
           "--new-tokens", str(args.new_tokens), "--repeat", str(args.repeat), "--reviews", str(args.reviews),
           "--accuracy", str(args.accuracy if accuracy is None else accuracy), "--batch-reviews",
           str(args.batch_reviews)]
    if args.classifier:
        cmd += ["--classifier", str(args.classifier)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"form": form, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}


# ---- the table --------------------------------------------------------------------------------------------
def _fmt(v, spec: str = ",.1f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = ("| form | file MB | peak RSS MB | prefill tok/s | decode tok/s b1 | decode tok/s b8 | ms/review b1 "
            "| reviews/s b32 | accuracy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lm, clf = r.get("lm", {}), r.get("classify", {})
        why = lm.get("skipped") or lm.get("error") or clf.get("error") or clf.get("skipped")
        if why and not (lm.get("prefill_tok_s") or clf.get("ms_per_review")):
            lines.append(f"| {r['form']} | {_fmt(r.get('file_mb'), '.2f')} | | | | | | | {why} |")
            continue
        acc = clf.get("accuracy")
        acc = "" if acc is None else f"{100 * acc:.2f}% (n={clf.get('accuracy_n')})"
        lines.append(f"| {r['form']} | {_fmt(r.get('file_mb'), '.2f')} | "
                     f"{_fmt(max(lm.get('peak_rss_mb') or 0, clf.get('peak_rss_mb') or 0), ',.0f')} | "
                     f"{_fmt(lm.get('prefill_tok_s'))} | {_fmt(lm.get('decode_b1_tok_s'))} | "
                     f"{_fmt(lm.get('decode_b8_tok_s'))} | {_fmt(clf.get('ms_per_review'), '.2f')} | "
                     f"{_fmt(clf.get('b32_reviews_per_s'))} | {acc} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    by = {r["form"]: r for r in rows}

    def get(form, section, key):
        return (by.get(form, {}).get(section) or {}).get(key)

    out = []
    for b in (1, 8):
        ours = get("ours-fp32", "lm", f"decode_b{b}_tok_s")
        for form, target in (("llama.cpp", 0.8), ("onnx-fp32", 1.0), ("hf", 2.5), ("ours-fp32-torch", None)):
            other = get(form, "lm", f"decode_b{b}_tok_s")
            if ours and other:
                goal = "" if target is None or b != 1 else \
                    f" (target >= {target}x{'' if ours / other >= target else ', MISSED'})"
                out.append(f"batch-{b} decode, ours fp32 / {form}: {ours / other:.2f}x{goal}")
    fp32, int8 = by.get("ours-fp32", {}), by.get("ours-int8", {})
    if fp32.get("fp32_mb") and int8.get("file_mb"):
        # against the weights in fp32, whatever dtype the source folder stores (a published model is bf16)
        out.append(f"int8 file: {fp32['fp32_mb'] / int8['file_mb']:.2f}x smaller than the fp32 weights "
                   f"({fp32['fp32_mb']:.2f} MB; target >= 3.5x)")
    for section, key, what in (("lm", "decode_b1_tok_s", "decode b1"), ("lm", "decode_b8_tok_s", "decode b8"),
                               ("lm", "prefill_tok_s", "prefill")):
        a, b = get("ours-fp32", section, key), get("ours-int8", section, key)
        if a and b:
            goal = f" (target >= 1.2x{'' if b / a >= 1.2 else ', MISSED'})" if key == "decode_b1_tok_s" else ""
            out.append(f"int8 vs fp32 {what}: {b / a:.2f}x{goal}")
    a, b = get("ours-fp32", "classify", "ms_per_review"), get("ours-int8", "classify", "ms_per_review")
    if a and b:
        out.append(f"int8 vs fp32 classification at batch 1: {a / b:.2f}x faster per review")
    a, b = get("ours-fp32", "classify", "b32_reviews_per_s"), get("ours-int8", "classify", "b32_reviews_per_s")
    if a and b:
        out.append(f"int8 vs fp32 classification at batch 32: {b / a:.2f}x")
    a, b = get("ours-fp32", "classify", "accuracy"), get("ours-int8", "classify", "accuracy")
    if a is not None and b is not None:
        out.append(f"int8 vs fp32 accuracy: {100 * (b - a):+.2f} points (target within 0.5)")
    if get("ours-fp32", "lm", "greedy_tokens") is not None:
        ref = get("ours-fp32", "lm", "greedy_tokens")
        same = [f for f in by if get(f, "lm", "greedy_tokens") == ref]
        out.append(f"same 16 greedy tokens as ours fp32: {', '.join(same)}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a language-model folder or published name (e.g. base)")
    p.add_argument("--classifier", help="a decoder classifier folder or published name (IMDb) for ms/review and "
                                        "accuracy")
    p.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated subset of {', '.join(FORMS)}")
    p.add_argument("--work", type=Path, help="where exported forms are written (default /tmp/scratchlm-bench/...)")
    p.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeat", type=int, default=2, help="best of this many timings")
    p.add_argument("--rounds", type=int, default=3,
                   help="language-model timings: the forms take turns this many times, best of each kept")
    p.add_argument("--reviews", type=int, default=50, help="IMDb test reviews timed for ms/review")
    p.add_argument("--batch-reviews", type=int, default=256, help="IMDb test reviews timed at batch 32")
    p.add_argument("--accuracy", type=int, default=0, help="IMDb test reviews scored for accuracy (0 = skip)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        p.error(f"unknown forms {unknown}; choose from {', '.join(FORMS)}")
    from scratchlm.model.folder import resolve_model

    args.model = resolve_model(args.model)
    if args.classifier:
        args.classifier = resolve_model(args.classifier)
    work = args.work or Path("/tmp/scratchlm-bench") / f"{args.model.parent.name}-{args.model.name}"
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    lm_paths = prepare(args.model, work / "lm", forms, log)
    clf_paths = prepare(args.classifier, work / "classifier", [f for f in forms if f != "llama.cpp"], log) \
        if args.classifier else {}
    # Language-model timings, --rounds times, the forms taking turns, best speed of each kept: on a shared
    # or throttling machine the speed drifts over minutes, and running the forms one after the other would
    # hand that drift to the comparison.
    lm: dict[str, dict] = {}
    for rnd in range(args.rounds):
        for form in forms:
            log(f"running {form} (language model, round {rnd + 1}/{args.rounds})")
            res = run_form(form, lm_paths[form], "lm", args)
            best = lm.setdefault(form, res)
            for key, val in res.items():
                if key.endswith("tok_s") and val is not None and (best.get(key) is None or val > best[key]):
                    best[key] = val
            best["peak_rss_mb"] = max(best.get("peak_rss_mb") or 0, res.get("peak_rss_mb") or 0)
            best["rounds"] = rnd + 1
    # Classifier timings take turns the same way; accuracy is scored once (round 1), the speeds keep their best.
    clf: dict[str, dict] = {}
    for rnd in range(args.rounds if clf_paths else 0):
        for form in (f for f in forms if f in clf_paths):
            log(f"running {form} (classifier, round {rnd + 1}/{args.rounds})")
            res = run_form(form, clf_paths[form], "classify", args, accuracy=args.accuracy if rnd == 0 else 0)
            best = clf.setdefault(form, res)
            if "ms_per_review" in res and "ms_per_review" in best:
                best["ms_per_review"] = min(best["ms_per_review"], res["ms_per_review"])
                best["b32_reviews_per_s"] = max(best["b32_reviews_per_s"], res["b32_reviews_per_s"])
            best["peak_rss_mb"] = max(best.get("peak_rss_mb") or 0, res.get("peak_rss_mb") or 0)
    rows = []
    for form in forms:
        row = {"form": form, "file_mb": file_size(form, lm_paths[form]) / 1e6, "lm": lm[form]}
        if form == "ours-fp32":
            row["fp32_mb"] = fp32_size(lm_paths[form]) / 1e6
        if form in clf:
            row["classify"] = clf[form]
        elif args.classifier:
            row["classify"] = {"skipped": "no classifier head in this format"}
        rows.append(row)
    print(f"model {args.model} ({args.threads} threads, prompt {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, greedy; classifier {args.classifier or '-'})\n")
    print(table(rows))
    print()
    print("\n".join(ratios(rows)))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
