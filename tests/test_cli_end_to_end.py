"""Every verb group through ``scratchlm.cli.main`` on tiny models: training (finetune, baseline, distill),
using a model (generate, evaluate, classify, translate, summarize), shipping it (quantize, export) and looking
at runs (report, models). Serving runs end to end in test_serve.py."""

from __future__ import annotations

import json

import pytest
from conftest import DATA_OVERRIDES, classify_overrides, requires_data, write_sentiment_csv

from scratchlm.cli import main
from scratchlm.model.folder import load_model


@requires_data
def test_prepare_verb_writes_the_shards(tmp_path, capsys):
    assert main(["prepare", *DATA_OVERRIDES, "--out", str(tmp_path / "data")]) == 0
    assert "prepared" in capsys.readouterr().out
    assert (tmp_path / "data" / "train.bin").exists() and (tmp_path / "data" / "tokenizer.json").exists()


def test_training_verbs_then_report(tmp_path, tiny_lm_dir, capsys):
    csv = write_sentiment_csv(tmp_path / "sentiment.csv", n=120)
    runs = tmp_path / "runs"
    recipe = [*classify_overrides(runs, tiny_lm_dir, csv), "train.max_steps=4", "train.eval_interval=2",
              "train.save_interval=2"]
    assert main(["finetune", "classify", *recipe]) == 0
    assert f"model: {runs / 'decoder-full' / 'model'}" in capsys.readouterr().out
    assert main(["baseline", "bow", *recipe]) == 0
    assert main(["baseline", "lead", *recipe]) == 2  # the summarization baseline on a classification recipe
    assert "lead is the summarization baseline" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(runs / "decoder-full" / "model"), "--student", "teacher-layers:0",
                 "--train.max_steps", "2", "speed_examples=8"]) == 0
    student = load_model(runs / "decoder-distilled" / "model")
    assert student.task == "classify" and student.model.cfg.n_layer == 1
    capsys.readouterr()
    assert main(["report", str(runs)]) == 0
    assert "html:" in capsys.readouterr().out
    page = (runs / "report.html").read_text("utf-8")
    assert all(name in page for name in ("decoder-full", "bow", "decoder-distilled"))


def test_model_verbs(task_folders, tmp_path, capsys):
    folders = task_folders
    assert main(["generate", "--model", str(folders["lm"]), "--max-new-tokens", "4", "--temperature", "0",
                 "ROMEO:"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    text = tmp_path / "held_out.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n", "utf-8")
    assert main(["evaluate", "--model", str(folders["lm"]), "--data", str(text), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["val_bpb"] > 0
    assert main(["classify", "--model", str(folders["clf"]), "--json", "a good film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("neg", "pos")
    assert main(["translate", "--model", str(folders["mt"]), "--beams", "2", "--max-new-tokens", "4", "the cat"]) == 0
    assert main(["summarize", "--model", str(folders["sum"]), "--beams", "1", "--max-new-tokens", "4",
                 "A long text. It goes on."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["summarize", "--model", str(folders["mt"]), "x"]) == 2  # the verb must be the model's task
    assert "is a translate model" in capsys.readouterr().err
    assert main(["generate", "--model", str(folders["clf"]), "x"]) == 2  # a classifier does not generate
    assert "not a lm or translate or summarize model" in capsys.readouterr().err


def test_shipping_verbs(task_folders, tmp_path, capsys):
    folders = task_folders
    pytest.importorskip("torchao", reason="torchao is not installed (pip install scratchlm[export])")
    pytest.importorskip("transformers", reason="transformers is not installed (pip install scratchlm[export])")
    int8 = tmp_path / "lm-int8"
    assert main(["quantize", "--model", str(folders["lm"]), "--out", str(int8)]) == 0
    assert "smaller" in capsys.readouterr().out
    assert main(["generate", "--model", str(int8), "--max-new-tokens", "3", "--temperature", "0", "ROMEO:"]) == 0
    capsys.readouterr()
    assert main(["export", "--model", str(folders["clf"]), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert "AutoModelForSequenceClassification" in capsys.readouterr().out
    assert main(["export", "--model", str(int8), "--format", "hf", "--out", str(tmp_path / "no")]) == 2
    assert "int8 model made by `scratchlm quantize`" in capsys.readouterr().err


def test_models_verb_lists_the_presets(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("1m", "6m", "20m", "50m", "125m"))


def test_task_model_bad_inputs_get_errors_or_warnings_not_tracebacks(task_folders, tmp_path, capsys):
    """Issue 19's bad input: a model of another task given to a verb is a one-line error; a text in the wrong
    language for a translator and an empty or huge e-mail to summarize get a warning with a result."""
    import warnings

    from scratchlm.infer.seq2seq import DecodeConfig, load_seq2seq

    assert main(["classify", "--model", str(task_folders["lm"]), "a fine film"]) != 0
    assert main(["summarize", "--model", str(task_folders["mt"]), "Meeting moved to Friday."]) == 2
    assert main(["translate", "--model", str(task_folders["sum"]), "hello"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "is a translate model" in err and "is a summarize model" in err

    mt, summ = load_seq2seq(task_folders["mt"]), load_seq2seq(task_folders["sum"])
    decode = DecodeConfig(num_beams=1, max_new_tokens=4)
    with pytest.warns(UserWarning, match="do not look like English.*translates en-zh"):
        out = mt.generate(["这是一个机器翻译的例子。", "This is an example."], decode)
    assert len(out) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # English text for an en->zh model: no warning
        mt.generate(["This is an example of machine translation."], decode)
    with pytest.warns(UserWarning, match="empty source"):
        assert summ.generate(["", "Lunch moved to noon."], decode)[0] == ""
    with pytest.warns(UserWarning, match="truncated"):
        assert len(summ.generate(["word " * 200_000], decode)) == 1  # a 1 MB e-mail


def test_cli_says_a_warning_in_one_line_and_restores_the_format(tmp_path, capsys):
    """A warning on the command line reads like its errors (no source line of ours under it); main() puts the
    interpreter's format back, since tests and notebooks call it in-process."""
    import warnings

    from scratchlm.cli import warning_format

    fmt = warning_format("summarize")
    assert fmt("1 source(s) were truncated", UserWarning, "/x/predict.py", 304) == \
        "scratchlm summarize: warning: 1 source(s) were truncated\n"
    assert fmt("lbfgs failed", RuntimeWarning, "x.py", 1) == \
        "scratchlm summarize: warning: RuntimeWarning: lbfgs failed\n"
    before = warnings.formatwarning
    assert main(["models"]) == 0
    assert warnings.formatwarning is before


def test_evaluate_by_published_name_writes_under_runs_eval(task_folders, tmp_path, monkeypatch, capsys):
    """`scratchlm evaluate --model NAME` used to write NAME/eval in the working directory; its files now go to
    runs/eval/NAME, and the published folder is left as its manifest describes it."""
    from scratchlm.export.publish import publish

    models = tmp_path / "models"
    publish(task_folders["clf"], "tiny-clf", models)
    monkeypatch.setenv("SCRATCHLM_MODELS_DIR", str(models))
    monkeypatch.chdir(tmp_path)
    csv = write_sentiment_csv(tmp_path / "s.csv", n=40)
    assert main(["evaluate", "--model", "tiny-clf", "--data", str(csv) + ":train", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 40
    assert (tmp_path / "runs" / "eval" / "tiny-clf" / "eval_s_train.json").exists()
    assert not (tmp_path / "tiny-clf").exists() and not (models / "tiny-clf" / "eval").exists()
    load_model("tiny-clf")  # the manifest still matches
