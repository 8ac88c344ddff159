"""Translation/summarization runner end to end on tiny models: decoder, GRU baseline, lead baseline, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, write_translation_pairs

from scratchlm.baselines.lead import lead
from scratchlm.config import ConfigError
from scratchlm.infer.seq2seq import load_seq2seq
from scratchlm.stages.seq2seq import build_config, run

QUIET = lambda *a, **k: None  # noqa: E731


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_translation_pairs(tmp_path_factory.mktemp("mt") / "pairs.jsonl", 300)


def _cfg(tmp_path, init, data, **over):
    o = [f"init={init}", f"data.dataset={data}", "data.source_column=en", "data.target_column=zh",
         "data.src_lang=en", "data.tgt_lang=zh", "data.val_size=20", "data.test_size=20",
         f"out_root={tmp_path / 'runs'}", "max_target_tokens=24", "train.max_steps=20", "train.micro_batch_size=8",
         "train.lr=3e-3", "train.warmup_steps=2", "train.eval_interval=10", "train.save_interval=10",
         "train.progress=false", "train.tensorboard=false", "train.device=cpu", "train.precision=fp32",
         "train.threads=1", "decode.num_beams=2", "decode.max_new_tokens=24",
         *[f"{k}={v}" for k, v in over.items()]]
    return build_config(None, o, defaults={"task": "translate"})


def test_decoder_translation_run_reload_and_direction_check(tmp_path, tiny_lm_dir, pairs_file):
    report = run(_cfg(tmp_path, tiny_lm_dir, pairs_file, name="decoder"), log=QUIET)
    assert report["direction"] == "en-zh" and set(report["test"]) == {"greedy", "beam"}
    for mode in ("greedy", "beam"):
        b = report["test"][mode]["bleu"]
        assert 0 <= b["score"] <= 100 and "tok:zh" in b["signature"]
        assert report["test"][mode]["sentences_per_s"] > 0
    rows = [json.loads(x) for x in (tmp_path / "runs/decoder/predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and {"source", "references", "greedy", "beam"} <= set(rows[0])
    loaded = load_seq2seq(tmp_path / "runs/decoder/model")
    assert loaded.check_direction("en", "zh") == ("en", "zh")
    with pytest.raises(ValueError, match="supported directions: en-zh"):
        loaded.check_direction("fr", "de")


def test_gru_baseline_and_lead(tmp_path, tiny_lm_dir, pairs_file):
    cfg = _cfg(tmp_path, tiny_lm_dir, pairs_file, name="gru", kind="gru", **{"rnn.hidden_size": 32,
                                                                             "rnn.n_embd": 32})
    report = run(cfg, log=QUIET)
    assert report["kind"] == "gru" and report["parameters"] > 0 and "beam" in report["test"]
    assert load_seq2seq(tmp_path / "runs/gru/model").generate(["cat dog"], cfg.decode, num_beams=1)[0] is not None
    assert lead("First one. Second one! Third") == "First one."
    assert lead("line one\nline two", 2) == "line one line two"


def test_translate_cli(tmp_path, tiny_lm_dir, pairs_file, cli_env):
    run(_cfg(tmp_path, tiny_lm_dir, pairs_file, name="decoder", **{"train.max_steps": 2}), log=QUIET)
    model = str(tmp_path / "runs/decoder/model")
    cli = [sys.executable, "-m", "scratchlm.cli", "translate", "--model", model]
    p = subprocess.run(cli + ["cat dog", "--beams", "2", "--max-new-tokens", "8"], env=cli_env, capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1
    p = subprocess.run(cli + ["cat", "--src", "fr", "--tgt", "de"], env=cli_env, capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 2 and "supported directions: en-zh" in p.stderr
    inp = tmp_path / "in.txt"
    inp.write_text("cat dog\n\nbig sun\n")  # a blank line: an empty output in its place, a warning, no crash
    p = subprocess.run(cli + ["--input", str(inp), "--beams", "1", "--max-new-tokens", "6"], env=cli_env,
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(r) for r in (tmp_path / "in.translate.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == ["cat dog", "", "big sun"] and rows[1]["output"] == ""
    assert "1 empty source line(s) (first at line 2)" in p.stderr
    inp.write_bytes(b"cat dog\nbig \xff sun\n")
    p = subprocess.run(cli + ["--input", str(inp), "--overwrite"], env=cli_env, capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode != 0 and "byte" in p.stderr and "in.txt" in p.stderr and "Traceback" not in p.stderr


def test_evaluate_cli_rebuilds_the_recipe_split(tmp_path, tiny_lm_dir, pairs_file, cli_env):
    run(_cfg(tmp_path, tiny_lm_dir, pairs_file, name="decoder", **{"train.max_steps": 2}), log=QUIET)
    model = str(tmp_path / "runs/decoder/model")
    p = subprocess.run([sys.executable, "-m", "scratchlm.cli", "evaluate", "--model", model, "--beams", "1",
                        "--json"], env=cli_env, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    assert m["n"] == 20 and "bleu" in m and "chrf" in m and m["direction"] == "en-zh"
    rows = (tmp_path / "runs/decoder/model/eval").glob("*.predictions.jsonl")
    assert len(next(rows).read_text().splitlines()) == 20


def test_backbone_that_read_the_dataset_must_share_its_split():
    from scratchlm.data.parallel import Seq2SeqDataConfig
    from scratchlm.data.prepare import LeakageError
    from scratchlm.stages.seq2seq import check_backbone_split

    cont = {"data": {"corpora": ["wikipedia_en"]},
            "backbone": {"data": {"corpora": [{"source": "tatoeba_cmn_eng", "split": "train"}]}}}
    check_backbone_split(cont, Seq2SeqDataConfig(dataset="tatoeba_cmn_eng"))  # the default split: fine
    check_backbone_split({"data": {"corpora": ["wikipedia_en"]}}, Seq2SeqDataConfig(dataset="tatoeba_cmn_eng",
                                                                                      seed=7))
    with pytest.raises(LeakageError, match="splits differently"):
        check_backbone_split(cont, Seq2SeqDataConfig(dataset="tatoeba_cmn_eng", seed=7))
    # AESLC's test set is its own file: training on the validation e-mails (aeslc_annotated) cannot leak it
    aeslc = {"data": {"corpora": ["aeslc"]}}
    check_backbone_split(aeslc, Seq2SeqDataConfig(dataset="aeslc", train_split="validation", val_split=None,
                                                  val_size=500, references_as_targets=True))
    with pytest.raises(LeakageError, match="splits differently"):  # a test set carved from the training file
        check_backbone_split(aeslc, Seq2SeqDataConfig(dataset="aeslc", test_split=None))


def test_a_recipe_continues_the_seq2seq_stage_it_names(tmp_path, tiny_lm_dir, pairs_file):
    # `pretrain:` may name the fine-tuning stage this one refines (aeslc_annotated continues aeslc): when its
    # model is missing it runs first, with `pretrain_overrides` (here: its report on validation, not test)
    first = tmp_path / "first.yaml"
    first.write_text(f"task: translate\nout_root: {tmp_path / 'runs_a'}\n", "utf-8")
    cfg = _cfg(tmp_path, tmp_path / "runs_a/decoder/model", pairs_file, name="refined", **{
        "pretrain": str(first), "train.max_steps": 4})
    cfg.pretrain_overrides = [f"init={tiny_lm_dir}", f"data.dataset={pairs_file}", "data.source_column=en",
                              "data.target_column=zh", "data.src_lang=en", "data.tgt_lang=zh", "data.val_size=20",
                              "data.test_size=20", "max_target_tokens=24", "train.max_steps=4",
                              "train.micro_batch_size=8", "train.progress=false", "train.tensorboard=false",
                              "train.device=cpu", "train.precision=fp32", "train.threads=1", "decode.num_beams=1",
                              "decode.max_new_tokens=8", "report_split=validation", "eval_greedy=false"]
    lines = []
    report = run(cfg, log=lines.append)
    assert any("running the recipe" in str(x) for x in lines)
    first_report = json.loads((tmp_path / "runs_a/decoder/report.json").read_text())
    assert first_report["test_split"].endswith("[validation 20, seed 1337]")  # the test set was not read there
    assert report["steps"] == 4 and report["test_examples"] == 20
    assert json.loads((tmp_path / "runs/refined/model/config.json").read_text())["backbone"]["folder"] \
        .endswith("runs_a/decoder/model")
    # a second run finds the first stage's model and does not run it again
    lines.clear()
    run(_cfg(tmp_path, tmp_path / "runs_a/decoder/model", pairs_file, name="again", pretrain=str(first),
             **{"train.max_steps": 2}), log=lines.append)
    assert not any("running the recipe" in str(x) for x in lines)


def test_a_named_stage_must_make_the_init_folder(tmp_path, tiny_lm_dir, pairs_file):
    first = tmp_path / "first.yaml"
    first.write_text(f"task: translate\ninit: {tiny_lm_dir}\nout_root: {tmp_path / 'elsewhere'}\n", "utf-8")
    with pytest.raises(ConfigError, match="is not what recipe"):
        run(_cfg(tmp_path, tmp_path / "runs_a/decoder/model", pairs_file, pretrain=str(first)), log=QUIET)
