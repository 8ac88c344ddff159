"""No silent overwrite: a run folder that holds a run is continued (--resume) or moved aside (--overwrite), never
replaced; an output file never replaces the input or an existing file; predictions keep the input's columns."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import run_cli

from scratchlm.cli import main
from scratchlm.model import checkpoint as ckpt
from scratchlm.train.fsutil import check_run_folder, holds_run

TINY = ["train.max_steps=3", "train.eval_interval=0", "train.save_interval=1"]


def _snapshot(out):
    return {"report": (out / "report.json").read_text(), "latest": ckpt.read_pointer(out / "checkpoints", "LATEST"),
            "weights": (out / "model" / "model.safetensors").read_bytes(),
            "steps": sorted(p.name for p in (out / "checkpoints").glob("step_*"))}


def test_pretrain_again_into_a_finished_run_is_refused_resume_and_overwrite_work(tmp_path, cli_env):
    out = tmp_path / "run"
    run_cli(out, *TINY, env=cli_env)
    before = _snapshot(out)
    proc = run_cli(out, "train.max_steps=2", "train.eval_interval=0", "train.save_interval=1", env=cli_env,
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "already holds a run" in proc.stderr and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert _snapshot(out) == before  # nothing touched
    # --resume continues it (here: it is already at max_steps)
    run_cli(out, *TINY, "--resume", env=cli_env)
    # --overwrite moves the old run aside whole and starts afresh: no mixed lineage
    proc = run_cli(out, "train.max_steps=2", "train.eval_interval=0", "train.save_interval=1", "--overwrite",
                   env=cli_env)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and "moved the previous run" in proc.stdout + proc.stderr
    assert _snapshot(aside[0])["weights"] == before["weights"] and _snapshot(aside[0])["steps"] == before["steps"]
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_0000001", "step_0000002"]
    assert json.loads((out / "report.json").read_text())["steps"] == 2
    proc = run_cli(out, *TINY, "--overwrite", "--resume", env=cli_env, check=False)
    assert proc.returncode == 2 and "choose one" in proc.stderr


def test_a_folder_with_only_prepared_data_is_not_a_run(tmp_path):
    out = tmp_path / "base"
    (out / "data").mkdir(parents=True)
    (out / "data" / "prepare.json").write_text("{}")
    (out / "checkpoints").mkdir()  # created, nothing saved yet
    (out / "metrics.jsonl").write_text("")
    assert holds_run(out) == []
    check_run_folder(out, resume=False, overwrite=False)
    (out / "checkpoints" / "LATEST").write_text("step_0000001\n")
    assert holds_run(out) == ["checkpoints/"]
    with pytest.raises(Exception, match="already holds a run"):
        check_run_folder(out, resume=False, overwrite=False)
    check_run_folder(out, resume=True, overwrite=False)  # `pretrain --config base --resume` is never blocked
    assert out.is_dir()


def test_finetune_stage_refuses_a_finished_run(tmp_path, tiny_lm_dir):
    from conftest import classify_overrides, write_sentiment_csv

    from scratchlm.config import ConfigError
    from scratchlm.stages import classify

    csv = write_sentiment_csv(tmp_path / "s.csv", n=120)

    def cfg(*extra):
        return classify.build_config(None, [*classify_overrides(tmp_path / "runs", tiny_lm_dir, csv), "kind=bow",
                                            "name=bow", *extra])

    classify.run(cfg(), log=lambda *a, **k: None)
    report = (tmp_path / "runs" / "bow" / "report.json").read_text()
    with pytest.raises(ConfigError, match="already holds a run"):
        classify.run(cfg(), log=lambda *a, **k: None)
    assert (tmp_path / "runs" / "bow" / "report.json").read_text() == report
    classify.run(cfg("train.overwrite=true"), log=lambda *a, **k: None)
    assert len(list((tmp_path / "runs").glob("bow.old-*"))) == 1


# ---- predictions ---------------------------------------------------------------------------------------

@pytest.fixture
def clf(task_folders):
    return str(task_folders["clf"])


def test_output_is_never_the_input(tmp_path, clf, capsys):
    inp = tmp_path / "mine.jsonl"
    inp.write_text('{"id": 7, "text": "a good film", "label": "pos"}\n')
    before = inp.read_text()
    for extra in ([], ["--overwrite"]):
        assert main(["classify", "--model", clf, "--input", str(inp), "--output", str(inp), *extra]) == 2
        assert "is the input file" in capsys.readouterr().err
    assert inp.read_text() == before
    link = tmp_path / "link.jsonl"
    link.symlink_to(inp)
    assert main(["classify", "--model", clf, "--input", str(inp), "--output", str(link)]) == 2
    assert inp.read_text() == before


def test_existing_output_needs_overwrite(tmp_path, clf, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "a good film"}\n')
    out = tmp_path / "in.predictions.jsonl"
    out.write_text("precious\n")
    assert main(["classify", "--model", clf, "--input", str(inp)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert main(["classify", "--model", clf, "--input", str(inp), "--overwrite"]) == 0
    assert json.loads(out.read_text().splitlines()[0])["text"] == "a good film"


@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".parquet"])
def test_predictions_keep_every_input_column(tmp_path, clf, ext):
    df = pd.DataFrame({"id": ["a1", "b2", "c3"], "text": ["a good film", "awful plot", "fine story"],
                       "label": ["pos", "neg", "pos"], "source": ["x", "y", "z"]})
    inp = tmp_path / f"in{ext}"
    {".jsonl": lambda p: df.to_json(p, orient="records", lines=True), ".csv": lambda p: df.to_csv(p, index=False),
     ".parquet": lambda p: df.to_parquet(p, index=False)}[ext](inp)
    out = tmp_path / f"pred{ext}"
    assert main(["classify", "--model", clf, "--input", str(inp), "--output", str(out)]) == 0
    got = {".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False), ".csv": pd.read_csv,
           ".parquet": pd.read_parquet}[ext](out)
    assert list(got.columns[:4]) == ["id", "text", "label", "source"]
    assert got["id"].tolist() == ["a1", "b2", "c3"] and got["label"].tolist() == ["pos", "neg", "pos"]
    assert {"prediction", "probability"} <= set(got.columns) and any(c.startswith("p_") for c in got.columns)
    # the default output keeps the input's format
    assert main(["classify", "--model", clf, "--input", str(inp)]) == 0
    assert (tmp_path / f"in.predictions{ext}").exists()


@pytest.mark.parametrize("name", ["notes.txt", "book.xlsx", "noext"])
def test_unknown_output_formats_are_refused(tmp_path, clf, name, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "a good film"}\n')
    assert main(["classify", "--model", clf, "--input", str(inp), "--output", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert ".jsonl, .csv, .parquet" in err and not (tmp_path / name).exists()


def test_huge_one_line_input_is_clipped_before_tokenizing(tmp_path, clf, monkeypatch):
    """A 50 MB line used to be tokenized whole (4.9 GB peak RSS); only its head and tail are read."""
    from scratchlm.infer import classify as infer

    seen = []
    real = infer.encode_texts

    def spy(tok, texts, *a, **k):
        seen.extend(len(t) for t in texts)
        return real(tok, texts, *a, **k)

    monkeypatch.setattr(infer, "encode_texts", spy)
    loaded = infer.load_classifier(clf)
    big = "a good film " * 500_000  # 6 MB
    p_big = loaded.predict_proba([big])
    bound = 2 * loaded.config["max_length"] * infer.CHARS_PER_TOKEN_BOUND + 1
    assert seen and max(seen) <= bound
    p_clip = loaded.predict_proba([infer.clip_text(big, loaded.config["max_length"])])
    assert (p_big == p_clip).all()


def test_seq2seq_output_guard(tmp_path, task_folders, capsys):
    inp = tmp_path / "in.txt"
    inp.write_text("cat dog\n")
    assert main(["translate", "--model", str(task_folders["mt"]), "--input", str(inp), "--output", str(inp)]) == 2
    assert inp.read_text() == "cat dog\n"
    out = tmp_path / "in.translate.jsonl"
    out.write_text("keep\n")
    assert main(["translate", "--model", str(task_folders["mt"]), "--input", str(inp)]) == 2
    assert out.read_text() == "keep\n"
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
