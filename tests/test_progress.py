"""The training progress bar tells the truth: a time budget shows seconds of the budget, a step budget steps."""

from __future__ import annotations

from conftest import make_trainer, requires_data


@requires_data
def test_time_budgeted_run_counts_seconds_of_its_budget(prepared, tmp_path, capsys):
    trainer = make_trainer(prepared, tmp_path / "t", max_steps=100_000, max_time_s=3, progress=True,
                           eval_interval=0, save_interval=100_000)
    trainer.fit()
    err = capsys.readouterr().err
    assert "train (time budget)" in err and "/3 s" in err
    assert "/100000" not in err  # never the step total the run will not reach
    assert trainer.step < 100_000


@requires_data
def test_step_budgeted_run_counts_steps(prepared, tmp_path, capsys):
    make_trainer(prepared, tmp_path / "s", max_steps=4, progress=True, eval_interval=0).fit()
    err = capsys.readouterr().err
    assert "4/4" in err and "time budget" not in err
