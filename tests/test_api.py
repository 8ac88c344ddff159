"""scratchlm.load and the Model API: task dispatch, batching, stop rules, streaming, threads, chat template."""

from __future__ import annotations

import threading

import pytest

import scratchlm
from scratchlm.api import CHAT_STOP, GenerationRequest, TaskError, default_name, format_chat, model_task


@pytest.fixture(scope="module")
def folders(task_folders):
    return task_folders


@pytest.fixture(scope="module")
def lm(folders):
    return scratchlm.load(folders["lm"])


def test_load_picks_the_task_from_the_folder(folders):
    kinds = {k: scratchlm.load(v) for k, v in folders.items()}
    assert {k: m.task for k, m in kinds.items()} == {"lm": "lm", "clf": "classify", "mt": "translate",
                                                     "sum": "summarize"}
    assert kinds["lm"].tasks == ("generate",) and kinds["clf"].tasks == ("classify",)
    assert kinds["clf"].name == "clf"  # <run>/model is named after the run folder
    assert kinds["clf"].info()["labels"] == ["neg", "pos"]
    assert kinds["mt"].info()["source_lang"] == "en" and kinds["mt"].info()["target_lang"] == "zh"
    assert scratchlm.load(folders["lm"], name="mine").name == "mine"


def test_a_method_the_task_does_not_allow_is_a_clear_error(folders, lm):
    clf = scratchlm.load(folders["clf"])
    with pytest.raises(TaskError, match="is a classify model: it can classify, not generate"):
        clf.generate("hello")
    with pytest.raises(TaskError, match="is a lm model: it can generate, not classify"):
        lm.classify("hello")
    with pytest.raises(TaskError, match="not summarize"):
        scratchlm.load(folders["mt"]).summarize("hello")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        scratchlm.load(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json", "utf-8")
    with pytest.raises(Exception, match="not valid JSON"):
        scratchlm.load(bad)
    (bad / "config.json").write_text('{"task": "dance"}', "utf-8")
    with pytest.raises(TaskError, match="unknown task 'dance'"):
        model_task(bad)


def test_generate_length_stop_and_usage(lm):
    g = lm.generate("ROMEO:", max_tokens=7, temperature=0)
    assert g.finish_reason in ("length", "stop")
    assert g.prompt_tokens == len(lm.encode("ROMEO:"))
    if g.finish_reason == "length":
        assert g.completion_tokens == 7
    # a stop string that the greedy text contains cuts the text before it and reports "stop"
    full = lm.generate("ROMEO:", max_tokens=20, temperature=0).text
    assert len(full) > 4, full
    stop = full[2:4]
    cut = lm.generate("ROMEO:", max_tokens=20, temperature=0, stop=stop)
    assert cut.finish_reason == "stop" and stop not in cut.text and full.startswith(cut.text)


def test_seeded_sampling_is_reproducible_and_batches_keep_rows_independent(lm):
    a = lm.generate("First Citizen:", max_tokens=12, temperature=1.0, seed=7)
    b = lm.generate("First Citizen:", max_tokens=12, temperature=1.0, seed=7)
    assert a.text == b.text
    prompts = ["ROMEO:", "First Citizen:\nWe are", "KING"]
    alone = [lm.generate(p, max_tokens=9, temperature=0).text for p in prompts]
    batched = lm.generate(prompts, max_tokens=9, temperature=0)
    assert [g.text for g in batched] == alone


def test_rows_of_one_batch_keep_their_own_limits(lm):
    reqs = [GenerationRequest("ROMEO:", max_tokens=3, temperature=0),
            GenerationRequest("KING", max_tokens=11, temperature=0)]
    short, long = lm.generate_batch(reqs)
    assert short.completion_tokens <= 3 and long.completion_tokens <= 11
    assert short.text == lm.generate("ROMEO:", max_tokens=3, temperature=0).text


def test_context_length_and_empty_prompt_are_refused(lm):
    with pytest.raises(ValueError, match="context length 64"):
        lm.generate("ROMEO: " * 40, max_tokens=40)
    with pytest.raises(ValueError, match="prompt is empty"):
        lm.generate("", max_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        lm.generate("x", temperature=-1)


def test_stream_yields_the_generated_text_and_stops_when_closed(lm):
    pieces = list(lm.stream("ROMEO:", max_tokens=12, temperature=0))
    assert "".join(pieces) == lm.generate("ROMEO:", max_tokens=12, temperature=0).text
    it = lm.stream("ROMEO:", max_tokens=40, temperature=0)
    next(it)
    it.close()  # stops the generation at its next token and joins the helper thread
    assert not [t for t in threading.enumerate() if t.name.startswith("scratchlm-stream-")]


def test_concurrent_threads_get_the_same_results_as_serial_calls(lm):
    prompts = ["ROMEO:", "KING", "First", "JULIET:"] * 2
    expected = {p: lm.generate(p, max_tokens=6, temperature=0).text for p in set(prompts)}
    got, errors = {}, []

    def worker(i, p):
        try:
            got[i] = lm.generate(p, max_tokens=6, temperature=0).text
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [got[i] for i in range(len(prompts))] == [expected[p] for p in prompts]


def test_chat_template_is_the_documented_one(lm):
    prompt = format_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Who?"}])
    assert prompt == "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Who?\nAssistant:"
    assert format_chat([{"role": "user", "content": "x"}]) == "User: x\nAssistant:"
    with pytest.raises(ValueError, match="role"):
        format_chat([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="no user or assistant"):
        format_chat([{"role": "system", "content": "x"}])
    reply = lm.chat([{"role": "user", "content": "Hi"}], max_tokens=10, temperature=0)
    raw = lm.generate("User: Hi\nAssistant:", max_tokens=10, temperature=0, stop=list(CHAT_STOP))
    assert reply.text == raw.text.lstrip()


def test_classify_returns_labels_with_probabilities(folders):
    clf = scratchlm.load(folders["clf"])
    out = clf.classify(["a fine film", "a dull film", "ok"])
    assert len(out) == 3
    for c in out:
        assert set(c.probabilities) == {"neg", "pos"}
        assert abs(sum(c.probabilities.values()) - 1) < 1e-5
        assert c.label == max(c.probabilities, key=c.probabilities.get)
        assert c.probability == c.probabilities[c.label]
    one = clf.classify("a fine film")
    assert one.probabilities == pytest.approx(out[0].probabilities, abs=1e-5)
    with pytest.raises(ValueError, match="empty"):
        clf.classify(["fine", "  "])


def test_translate_and_summarize(folders):
    mt = scratchlm.load(folders["mt"])
    texts = mt.translate(["Hello there.", "Good morning."], num_beams=2, max_tokens=5)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert mt.translate("Hello there.", num_beams=2, max_tokens=5) == texts[0]
    with pytest.raises(ValueError, match="supported directions: en-zh"):
        mt.translate("Hello", target_lang="en")
    summ = scratchlm.load(folders["sum"])
    assert isinstance(summ.summarize("A long text about many things.", num_beams=1, max_tokens=4), str)


def test_default_name(tmp_path):
    assert default_name(tmp_path / "imdb" / "decoder-full" / "model") == "decoder-full"
    assert default_name(tmp_path / "base" / "checkpoints" / "step_000100") == "base"
    assert default_name(tmp_path / "mine") == "mine"
