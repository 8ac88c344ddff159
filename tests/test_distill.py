"""Knowledge distillation on tiny models: the loss, where gradients go, student initialisation, the three task
kinds end to end through the shared loop (output folders load with the standard loaders), exact resume."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import (
    DATA_OVERRIDES,
    classify_overrides,
    tiny_model_config,
    write_sentiment_csv,
    write_translation_pairs,
)

from scratchlm.cli.train import add_distill_parser
from scratchlm.config import ConfigError, to_dict
from scratchlm.model import checkpoint as ckpt
from scratchlm.model.transformer import Transformer
from scratchlm.stages import classify, seq2seq
from scratchlm.stages.base import count_parameters
from scratchlm.stages.distill import build_config, run
from scratchlm.stages.students import plan_student
from scratchlm.tasks.distill import (
    DistillLoss,
    DistillLossConfig,
    DistillStudent,
    DistillTask,
    make_projections,
    soft_target_loss,
)

QUIET = lambda *a, **k: None  # noqa: E731
TRAIN = ["train.progress=false", "train.tensorboard=false", "train.device=cpu", "train.precision=fp32",
         "train.threads=1", "train.compile=off"]


# ------------------------------------------------------------------------------------------------ the loss
def test_soft_target_loss_is_t2_kl_and_zero_for_equal_logits():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.allclose(soft_target_loss(t, t, 2.0), torch.zeros(5), atol=1e-6)
    assert torch.allclose(soft_target_loss(t + 3.0, t, 2.0), torch.zeros(5), atol=1e-5)  # shift-invariant
    p_t, p_s = torch.softmax(t / 2, -1), torch.softmax(s / 2, -1)
    expected = 4 * (p_t * (p_t.log() - p_s.log())).sum(-1)
    torch.testing.assert_close(soft_target_loss(s, t, 2.0), expected)
    s.requires_grad_(True)
    t.requires_grad_(True)
    soft_target_loss(s, t, 2.0).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None  # the teacher is a constant


def _lm_pair(vocab=64, width=32, n_layer=2):
    torch.manual_seed(1)
    teacher = Transformer(tiny_model_config(vocab, n_layer=3))
    torch.manual_seed(2)
    student = Transformer(tiny_model_config(vocab, n_embd=width, n_layer=n_layer))
    return teacher, student


class _Batches:
    """A stand-in inner task: fixed token batches (the wrapper only asks for micro_batches/batch_tokens)."""

    def __init__(self, model, batch):
        self.model, self.batch = model, batch

    def micro_batches(self, step, n_micro, micro_batch_size, rank, world_size):
        return [dict(self.batch)]

    def batch_tokens(self, batch):
        return batch["idx"].numel()


def test_gradient_reaches_only_the_student_and_its_projections():
    teacher, student = _lm_pair(width=16)
    pairs = [(0, 1), (1, 2)]
    wrapper = DistillStudent(student, make_projections(pairs, 16, 32))
    idx = torch.randint(0, 64, (2, 12))
    task = DistillTask(_Batches(student, {"idx": idx, "targets": idx.roll(-1, 1)}), teacher, wrapper, kind="lm",
                       cfg=DistillLossConfig(alpha=0.5, temperature=2.0, beta=1.0), pairs=pairs, log=QUIET)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    batch = task.micro_batches(0, 1, 2, 0, 1)[0]
    assert batch["teacher_logits"].shape == (2, 12, 64) and batch["teacher_hidden"].shape == (2, 2, 12, 32)
    loss, count = task.loss_module()(batch)
    loss.backward()
    assert int(count) == 24 and torch.isfinite(loss)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in wrapper.parameters())
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_seq2seq_distils_target_tokens_only():
    teacher, student = _lm_pair()
    idx = torch.randint(0, 64, (2, 10))
    targets = idx.roll(-1, 1).clone()
    targets[:, :6] = -100  # the prompt: no loss there
    task = DistillTask(_Batches(student, {"idx": idx, "targets": targets}), teacher, DistillStudent(student),
                       kind="seq2seq", cfg=DistillLossConfig(alpha=1.0), log=QUIET)
    batch = task.micro_batches(0, 1, 2, 0, 1)[0]
    loss_fn = task.loss_module()
    with torch.no_grad():
        base, count = loss_fn(batch)
        prompt = dict(batch, teacher_logits=batch["teacher_logits"].clone())
        prompt["teacher_logits"][:, :6] = torch.randn(2, 6, 64) * 5
        target = dict(batch, teacher_logits=batch["teacher_logits"].clone())
        target["teacher_logits"][:, 7] += torch.randn(2, 64) * 5
        assert int(count) == 8
        assert loss_fn(prompt)[0].item() == pytest.approx(base.item(), rel=1e-6)
        assert loss_fn(target)[0].item() != pytest.approx(base.item(), rel=1e-3)
        # a student equal to its teacher has a zero soft-target loss
        same = DistillLoss(DistillStudent(teacher), "seq2seq", DistillLossConfig(alpha=1.0), [])
        assert same(batch)[0].item() == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------------------------------------ students
def test_teacher_layers_student_copies_the_chosen_blocks():
    torch.manual_seed(0)
    teacher = Transformer(tiny_model_config(64, n_layer=3))
    plan = plan_student("teacher-layers:0,2", "auto", teacher, None, 32)
    student = plan.build(seed=5)
    assert student.cfg.n_layer == 2 and plan.copied_layers == [0, 2]
    t, s = teacher.state_dict(), student.state_dict()
    for k, v in s.items():
        src = k.replace("layers.1.", "layers.2.")
        assert torch.equal(v, t[src]), k
    assert not torch.equal(s["layers.1.attn.q_proj.weight"], t["layers.1.attn.q_proj.weight"])
    with pytest.raises(ConfigError, match="increasing"):
        plan_student("teacher-layers:2,0", "auto", teacher, None, 32)
    with pytest.raises(ConfigError, match="0..2"):
        plan_student("teacher-layers:0,3", "auto", teacher, None, 32)


def test_narrow_student_gets_the_teachers_embedding_on_its_principal_directions():
    torch.manual_seed(0)
    teacher = Transformer(tiny_model_config(64, n_embd=32, block_size=48))
    plan = plan_student({"n_layer": 1, "n_embd": 16, "n_head": 2}, "auto", teacher, None, 48)
    student = plan.build(seed=0)
    assert student.cfg.vocab_size == 64 and student.cfg.block_size == 48  # the teacher's vocabulary and context
    P = plan.projection
    assert P.shape == (32, 16)
    torch.testing.assert_close(P.T @ P, torch.eye(16), atol=1e-5, rtol=0)  # orthonormal basis
    E = teacher.embed.weight.detach()
    torch.testing.assert_close(student.embed.weight.detach(), E @ P)
    # the best rank-16 approximation of the teacher's embedding (Eckart-Young): no other basis keeps more
    kept = (E @ P).pow(2).sum()
    other = torch.linalg.qr(torch.randn(32, 16)).Q
    assert kept > (E @ other).pow(2).sum()
    proj = make_projections([(0, 2)], 16, 32, P)["0_2"]
    torch.testing.assert_close(proj.weight.detach(), P)  # student coordinates mapped back to the teacher's
    assert count_parameters(student) < count_parameters(teacher) / 2
    with pytest.raises(ConfigError, match="vocab_size 100 differs"):
        plan_student({"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 100}, "auto", teacher, None, 48)
    with pytest.raises(ConfigError, match="student.n_layr"):
        plan_student({"n_layr": 1}, "auto", teacher, None, 48)
    preset = plan_student("1m", "random", teacher, None, 48)
    assert preset.config.block_size == 48 and preset.config.n_embd == 128 and not preset.init


def test_student_with_another_tokenizer_is_refused(tmp_path, prepared):
    from scratchlm.tokenizer import train_tokenizer

    other = train_tokenizer(["some other text to learn from, " * 20, "and a second document here"], 300)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(other.vocab_size))
    folder = tmp_path / "other"
    ckpt.save_checkpoint(folder, model_tensors=ckpt.model_state(model),
                         config={"task": "lm", "tokenizer_fingerprint": other.fingerprint, "model": to_dict(model.cfg)},
                         tokenizer=other)
    teacher = Transformer(tiny_model_config(prepared.tokenizer.vocab_size))
    with pytest.raises(ConfigError, match="another tokenizer.*share one vocabulary"):
        plan_student(str(folder), "auto", teacher, prepared.tokenizer, 32)


# ------------------------------------------------------------------------------------------------ classify
@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return write_sentiment_csv(tmp_path_factory.mktemp("distill") / "sentiment.csv", n=240)


def _clf_overrides(root, init, csv):
    return [*classify_overrides(root, init, csv), *TRAIN]


@pytest.fixture(scope="module")
def teacher_clf(tmp_path_factory, tiny_lm_dir, csv):
    root = tmp_path_factory.mktemp("clf_runs")
    report = classify.run(classify.build_config(None, _clf_overrides(root, tiny_lm_dir, csv) + ["name=teacher"]),
                          log=QUIET)
    assert report["test"]["accuracy"] >= 0.9
    return root, root / "teacher" / "model"


def _distill_cfg(teacher, student, *extra):
    return build_config(None, [f"teacher={teacher}", "train.eval_interval=10", "train.save_interval=10", *TRAIN,
                               *extra], defaults={"student": student})


def test_classify_distillation_learns_the_teacher_and_saves_a_classifier(teacher_clf):
    root, teacher = teacher_clf
    cfg = _distill_cfg(teacher, {"n_layer": 1, "n_embd": 16, "n_head": 2}, "train.max_steps=40", "train.lr=1e-2",
                       "train.eval_at_start=true", "distill.alpha=0.7", "speed_examples=16")
    report = run(cfg, log=QUIET)
    out = root / "decoder-distilled"
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 40
    assert evals[-1]["val_kl"] < 0.5 * evals[0]["val_kl"], (evals[0]["val_kl"], evals[-1]["val_kl"])
    assert evals[-1]["val_agreement"] >= 0.9
    clf = classify.load_classifier(out / "model")  # a plain classifier folder: no projections, no wrapper
    assert clf.label_names == ["neg", "pos"] and clf.config["distill"]["teacher"] == str(teacher)
    assert clf.predict_proba(["the film was good and great"]).shape == (1, 2)
    d = report["distillation"]
    assert d["parameter_ratio"] < 0.6 and d["teacher"]["test_source"].endswith("report.json")
    assert d["accuracy_retained"] == pytest.approx(report["test"]["accuracy"] / d["teacher"]["test_accuracy"])
    assert d["speed"]["examples"] == 16 and d["speed"]["speedup"] > 0
    from scratchlm.stages.report import collect_runs

    names = {r["name"] for r in collect_runs(root)}
    assert {"teacher", "decoder-distilled"} <= names  # `scratchlm report` shows the student beside the teacher


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_classify_distillation_resumes_exactly(tmp_path, teacher_clf, beta):
    _, teacher = teacher_clf
    student = {"n_layer": 1, "n_embd": 16, "n_head": 2}
    common = [f"out_root={tmp_path}", "train.decay_steps=6", "train.eval_interval=3", "train.save_interval=3",
              f"distill.beta={beta}"]
    run(_distill_cfg(teacher, student, *common, "name=straight", "train.max_steps=6", "teacher_eval=never",
                     "speed_examples=0"), log=QUIET)
    run(_distill_cfg(teacher, student, *common, "name=resumed", "train.max_steps=3", "teacher_eval=never",
                     "speed_examples=0"), log=QUIET)
    run(_distill_cfg(teacher, student, *common, "name=resumed", "train.max_steps=6", "train.resume=true",
                     "teacher_eval=never", "speed_examples=0"), log=QUIET)
    a = ckpt.load_tensors(tmp_path / "straight" / "checkpoints" / "step_0000006")
    b = ckpt.load_tensors(tmp_path / "resumed" / "checkpoints" / "step_0000006")
    assert a.keys() == b.keys() and any(k.startswith("projections.") for k in a) == (beta > 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa = ckpt.load_tensors(tmp_path / "straight" / "checkpoints" / "step_0000006", "optimizer.safetensors")
    ob = ckpt.load_tensors(tmp_path / "resumed" / "checkpoints" / "step_0000006", "optimizer.safetensors")
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


# ------------------------------------------------------------------------------------------------ lm, seq2seq
def test_lm_distillation_writes_a_language_model(tmp_path, tiny_lm_dir, prepared):
    from scratchlm.model.folder import load_model

    cfg = _distill_cfg(tiny_lm_dir, "teacher-layers:1", *DATA_OVERRIDES, f"train.out_dir={tmp_path / 'lm'}",
                       "train.max_steps=8", "train.micro_batch_size=4", "train.eval_batches=2", "distill.beta=0.5",
                       "task=lm")
    report = run(cfg, log=QUIET)
    loaded = load_model(tmp_path / "lm" / "model")
    assert loaded.model.cfg.n_layer == 1 and loaded.tokenizer.fingerprint == prepared.tokenizer.fingerprint
    assert loaded.config["distill"]["layer_pairs"] == [[0, 1]]
    val = report["validation_by_corpus"]["tinyshakespeare"]
    assert {"student", "teacher"} == set(val) and val["student"]["val_bpb"] > 0
    evals = [r for r in map(json.loads, (tmp_path / "lm" / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "eval"]
    assert {"val_loss", "val_bpb", "val_kl", "val_agreement"} <= set(evals[-1])


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_translation_pairs(tmp_path_factory.mktemp("mt") / "pairs.jsonl", 200)


def test_seq2seq_distillation_reports_bleu_beside_the_teachers(tmp_path, tiny_lm_dir, pairs_file):
    o = [f"init={tiny_lm_dir}", f"data.dataset={pairs_file}", "data.source_column=en", "data.target_column=zh",
         "data.src_lang=en", "data.tgt_lang=zh", "data.val_size=16", "data.test_size=16", f"out_root={tmp_path}",
         "max_target_tokens=16", "train.max_steps=10", "train.micro_batch_size=8", "train.lr=3e-3",
         "train.warmup_steps=2", "train.eval_interval=5", "train.save_interval=5", "decode.num_beams=2",
         "decode.max_new_tokens=16", "name=teacher", *TRAIN]
    seq2seq.run(seq2seq.build_config(None, o, defaults={"task": "translate"}), log=QUIET)
    cfg = _distill_cfg(tmp_path / "teacher" / "model", {"n_layer": 1, "n_embd": 16, "n_head": 2},
                       "train.max_steps=6", "task=translate")
    report = run(cfg, log=QUIET)
    loaded = seq2seq.load_seq2seq(tmp_path / "decoder-distilled" / "model")
    assert loaded.task == "translate" and loaded.model.cfg.n_embd == 16
    d = report["distillation"]
    assert set(d["bleu_beam"]) == {"teacher", "student"} and d["teacher"]["test"]["source"].endswith("report.json")
    assert report["test"]["beam"]["num_beams"] == 2


# ------------------------------------------------------------------------------------------------ config, CLI
def test_cli_flags_and_overrides_split_between_distillation_and_task_recipe():
    from scratchlm.config import find_recipe as _recipe
    from scratchlm.config import overrides_from_args as _overrides

    parser = argparse.ArgumentParser()
    add_distill_parser(parser.add_subparsers(dest="verb"))
    args, extra = parser.parse_known_args(["distill", "--config", "distill_imdb", "--student", "teacher-layers:0,5",
                                           "--distill.alpha", "0.9", "--train.lr", "1e-3", "--epochs", "2"])
    cfg = build_config(_recipe(args.config), _overrides(extra), {"student": args.student})
    assert cfg.student == "teacher-layers:0,5" and cfg.distill.alpha == 0.9 and cfg.task == "classify"
    assert cfg.task_recipe["train"]["lr"] == "1e-3" and cfg.task_recipe["epochs"] == "2"
    with pytest.raises(ConfigError, match="distill.alhpa"):
        build_config(None, ["distill.alhpa=1", "teacher=x", "student=1m"])


def test_imdb_recipe_student_is_at_most_a_quarter_of_the_teacher():
    from scratchlm.config import find_recipe as _recipe
    from scratchlm.config import load_yaml
    from scratchlm.model.heads import SequenceClassifier
    from scratchlm.model.transformer import ModelConfig

    cfg = build_config(_recipe("distill_imdb"))
    # the teacher is the IMDb decoder fine-tuned from the base (imdb_lm continues the base: its architecture)
    base = load_yaml(_recipe("base"))
    teacher_model = ModelConfig(**{**base["model"], "vocab_size": base["data"]["vocab_size"]})
    with torch.device("meta"):
        teacher = SequenceClassifier(Transformer(teacher_model), 2)
        fields = {**cfg.student, "vocab_size": teacher_model.vocab_size, "block_size": 512}
        student = SequenceClassifier(Transformer(ModelConfig(**fields)), 2)
    n_t, n_s = count_parameters(teacher), count_parameters(student)
    assert 8.6e6 < n_t < 8.65e6 and n_s <= n_t / 4, (n_t, n_s)
