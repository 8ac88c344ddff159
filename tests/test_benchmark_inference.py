"""benchmarks/inference.py: one table for a model in its forms (tiny model, few tokens; timings not checked)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench_inference", REPO / "benchmarks" / "inference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tiny_lm_dir, tmp_path, forms, capsys):
    out = tmp_path / "r.json"
    code = _bench().main(["--model", str(tiny_lm_dir), "--forms", forms, "--work", str(tmp_path / "w"),
                          "--threads", "1", "--prompt-tokens", "8", "--new-tokens", "4", "--repeat", "1",
                          "--json", str(out)])
    assert code == 0
    return capsys.readouterr().out, json.loads(out.read_text())["rows"]


def test_table_for_ours_fp32_and_int8(tiny_lm_dir, tmp_path, capsys):
    pytest.importorskip("torchao", reason="torchao is not installed")
    text, rows = _run(tiny_lm_dir, tmp_path, "ours-fp32,ours-int8", capsys)
    assert "| ours-fp32 |" in text and "| ours-int8 |" in text
    fp32, int8 = rows
    for r in rows:
        assert r["lm"]["prefill_tok_s"] > 0 and r["lm"]["decode_b1_tok_s"] > 0 and r["lm"]["decode_b8_tok_s"] > 0
        assert r["lm"]["peak_rss_mb"] > 0
    assert fp32["file_mb"] > 2.5 * int8["file_mb"]
    assert "int8 file:" in text and "x smaller than the fp32 weights" in text


@pytest.mark.slow
def test_table_for_every_form(tiny_lm_dir, tmp_path, capsys):
    for pkg in ("torchao", "transformers", "onnxruntime", "onnxscript", "gguf", "llama_cpp"):
        pytest.importorskip(pkg)
    text, rows = _run(tiny_lm_dir, tmp_path, "ours-fp32,ours-bf16,ours-int8,hf,onnx-fp32,onnx-int8,llama.cpp", capsys)
    by = {r["form"]: r for r in rows}
    assert all("error" not in r["lm"] and "skipped" not in r["lm"] for r in rows), rows
    assert by["llama.cpp"]["lm"]["decode_b8_tok_s"] is None  # one sequence per llama-cpp-python context
    ref = by["ours-fp32"]["lm"]["greedy_tokens"]
    for form in ("hf", "onnx-fp32", "llama.cpp"):
        assert by[form]["lm"]["greedy_tokens"] == ref, form
    assert "/ HF transformers generate" in text


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_a_worker_reports_its_own_peak_memory_not_its_parents():
    # Bug: each form runs in its own process, but ru_maxrss survives exec, so every worker reported the
    # benchmark parent's peak (790 MB for all seven forms). A child started by a 600 MB parent must not.
    import subprocess
    import sys

    from scratchlm.train.hardware import peak_rss_mb

    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
    parent = peak_rss_mb()
    child = float(subprocess.run([sys.executable, "-c", "from scratchlm.train.hardware import peak_rss_mb; "
                                  "print(peak_rss_mb())"], capture_output=True, text=True, check=True).stdout)
    del ballast
    assert parent > 600
    assert 0 < child < parent - 400


def test_decode_layout_benchmark_runs_every_layout(capsys):
    spec = importlib.util.spec_from_file_location("bench_layout", REPO / "benchmarks" / "decode_layout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--preset", "1m", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for line in ("separate row-major", "separate column-major", "fused    row-major", "fused    column-major"):
        assert line in out
    cfg = mod.ModelConfig(**mod.PRESETS["1m"])  # fused shapes hold the same weights as the separate ones
    assert sum(o * i for o, i in mod.shapes(cfg, True)) == sum(o * i for o, i in mod.shapes(cfg, False))


def test_decode_batch_table(tiny_lm_dir, tmp_path, capsys, monkeypatch):
    from scratchlm.infer.quantize import quantize_folder

    quantize_folder(tiny_lm_dir, tmp_path / "int8")
    spec = importlib.util.spec_from_file_location("bench_decode_batch", REPO / "benchmarks" / "decode_batch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "auto")  # the script sets it for its own process
    assert mod.main(["--model", str(tiny_lm_dir), "--int8", str(tmp_path / "int8"), "--batches", "1,3",
                     "--new-tokens", "4", "--repeat", "1", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1 |") or
            line.startswith("| 3 |")]
    assert len(rows) == 2 and all(line.endswith("x |") for line in rows)
