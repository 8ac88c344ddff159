"""The HTTP server, driven live: the official ``openai`` client for completions and chat (plain and streamed),
plain HTTP for the task endpoints, the limits and every bad-input case; queueing, batching, timeouts,
client disconnects, the API key, metrics, a model that fails to load, and graceful shutdown."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from conftest import REPO, serve_settings  # noqa: E402
from serve_utils import (  # noqa: E402
    ThreadServer,
    free_port,
    metric,
    save_lm,
    wait_for,
)

import scratchlm  # noqa: E402
from scratchlm.serve.app import STATIC, create_app  # noqa: E402
from scratchlm.serve.server import ServeError, load_models, parse_model_specs  # noqa: E402

LONG = {"model": "long", "prompt": "ROMEO:", "max_tokens": 1500, "temperature": 0}  # greedy: never hits <|eos|>


@pytest.fixture(scope="module")
def folders(task_folders, prepared, tmp_path_factory):
    long = save_lm(tmp_path_factory.mktemp("serve_models") / "long" / "model", prepared.tokenizer, block_size=2048)
    return {"lm": task_folders["lm"], "long": long, **{k: v for k, v in task_folders.items() if k != "lm"}}


@pytest.fixture(scope="module")
def models(folders):
    return {name: scratchlm.load(path, name=name) for name, path in folders.items()}


settings = serve_settings


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)


def metrics_text(http) -> str:
    r = http.get("/metrics")
    assert r.status_code == 200
    return r.text


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None, text: str = "") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and err["type"]
    if code is not None:
        assert err["code"] == code, err
    assert text in err["message"], err
    return err


# ---- what is served ------------------------------------------------------------------------------------
def test_models_health_and_the_page(http):
    listing = http.get("/v1/models").json()
    assert listing["object"] == "list"
    by_id = {m["id"]: m for m in listing["data"]}
    assert set(by_id) == {"lm", "long", "clf", "mt", "sum"}
    assert by_id["lm"]["tasks"] == ["generate"] and by_id["lm"]["context_length"] == 64
    assert by_id["clf"]["labels"] == ["neg", "pos"] and by_id["mt"]["target_lang"] == "zh"
    assert all(m["object"] == "model" and m["owned_by"] == "scratchlm" for m in listing["data"])
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["lm", "long", "clf", "mt", "sum"]
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js">' in page.text
    for name in ("app.js", "style.css"):
        assert http.get(f"/static/{name}").status_code == 200
    for f in STATIC.iterdir():  # offline: the page loads nothing from another host
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", f.read_text("utf-8")), f.name


# ---- OpenAI-compatible endpoints, through the official client -------------------------------------------
def test_completions_with_the_openai_client(client, models):
    lm = models["lm"]
    out = client.completions.create(model="lm", prompt="ROMEO:", max_tokens=8, temperature=0)
    expected = lm.generate("ROMEO:", max_tokens=8, temperature=0)
    assert out.object == "text_completion" and out.model == "lm"
    assert out.choices[0].text == expected.text
    assert out.choices[0].finish_reason == expected.finish_reason
    assert out.usage.prompt_tokens == len(lm.encode("ROMEO:"))
    assert out.usage.completion_tokens == expected.completion_tokens
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    # n choices with a seed: reproducible; two prompts x n=2 -> 4 choices, prompts counted once each
    a = client.completions.create(model="lm", prompt="KING", max_tokens=6, temperature=1.0, top_p=0.9, n=2, seed=3)
    b = client.completions.create(model="lm", prompt="KING", max_tokens=6, temperature=1.0, top_p=0.9, n=2, seed=3)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1]
    two = client.completions.create(model="lm", prompt=["KING", "ROMEO:"], max_tokens=3, temperature=0, n=2)
    assert len(two.choices) == 4 and two.usage.prompt_tokens == len(lm.encode("KING")) + len(lm.encode("ROMEO:"))
    # stop strings and echo
    full = expected.text
    stopped = client.completions.create(model="lm", prompt="ROMEO:", max_tokens=8, temperature=0, stop=[full[3:5]])
    assert stopped.choices[0].finish_reason == "stop" and full.startswith(stopped.choices[0].text)
    echoed = client.completions.create(model="lm", prompt="ROMEO:", max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == "ROMEO:" + full


def test_streamed_completion_matches_the_plain_one(client):
    plain = client.completions.create(model="lm", prompt="First Citizen:", max_tokens=12, temperature=0)
    chunks = list(client.completions.create(model="lm", prompt="First Citizen:", max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # it came in pieces
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_chat_plain_and_streamed(client, models):
    messages = [{"role": "system", "content": "You speak verse."}, {"role": "user", "content": "Who goes there?"}]
    out = client.chat.completions.create(model="lm", messages=messages, max_tokens=10, temperature=0)
    expected = models["lm"].chat(messages, max_tokens=10, temperature=0)
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == expected.text
    assert out.usage.prompt_tokens == expected.prompt_tokens
    stream = client.chat.completions.create(model="lm", messages=messages, max_tokens=10, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_openai_client_gets_typed_errors(client):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens must be between 1 and 2000"):
        client.completions.create(model="lm", prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="is a classify model"):
        client.chat.completions.create(model="clf", messages=[{"role": "user", "content": "x"}])


# ---- task endpoints ---------------------------------------------------------------------------------------
def test_classify_endpoint(http, models):
    texts = ["a fine film", "a dull film"]
    r = http.post("/v1/classify", json={"model": "clf", "input": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "clf" and body["labels"] == ["neg", "pos"]
    expected = models["clf"].classify(texts)
    for item, want in zip(body["data"], expected):
        assert item["label"] == want.label
        assert item["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)
        assert abs(sum(item["probabilities"].values()) - 1) < 1e-5
    # "model" may be left out when one served model classifies
    single = http.post("/v1/classify", json={"input": "a fine film"}).json()
    assert single["data"][0]["probabilities"] == pytest.approx(body["data"][0]["probabilities"], abs=1e-5)


def test_translate_and_summarize_endpoints(http, models):
    r = http.post("/v1/translate", json={"model": "mt", "input": ["Hello.", "Good night."], "num_beams": 2,
                                         "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["source_lang"], body["target_lang"]) == ("en", "zh")
    assert [d["text"] for d in body["data"]] == models["mt"].translate(["Hello.", "Good night."], num_beams=2,
                                                                       max_tokens=5)
    r = http.post("/v1/summarize", json={"input": "A long story about a king.", "num_beams": 1, "max_tokens": 4})
    assert r.status_code == 200 and r.json()["model"] == "sum"
    assert r.json()["data"][0]["text"] == models["sum"].summarize("A long story about a king.", num_beams=1,
                                                                  max_tokens=4)


# ---- bad input: every case answers in the OpenAI error shape ---------------------------------------------
BAD = [
    # (name, path, body (dict -> JSON, bytes -> raw), status, code, text in the message)
    ("malformed JSON", "/v1/completions", b'{"model": "lm", "prompt": ', 400, "invalid_json", "not valid JSON"),
    ("invalid UTF-8", "/v1/completions", b'{"model": "lm", "prompt": "\xff\xfe caf\xe9"}', 400, "invalid_json",
     "UTF-8"),
    ("not an object", "/v1/completions", b"[1, 2]", 422, "invalid_value", "JSON object"),
    ("prompt not a string", "/v1/completions", {"model": "lm", "prompt": 5}, 422, "invalid_value", "prompt"),
    ("max_tokens as a string", "/v1/completions", {"model": "lm", "prompt": "x", "max_tokens": "5"}, 422,
     "invalid_value", "max_tokens: Input should be a valid integer"),
    ("temperature out of range", "/v1/completions", {"model": "lm", "prompt": "x", "temperature": 9}, 422,
     "invalid_value", "temperature"),
    ("missing prompt", "/v1/completions", {"model": "lm"}, 422, "invalid_value", "prompt: Field required"),
    ("unknown model", "/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404, "model_not_found",
     "served models: lm, long, clf, mt, sum"),
    ("empty prompt", "/v1/completions", {"model": "lm", "prompt": ""}, 422, "empty_prompt", "empty"),
    ("empty prompt list", "/v1/completions", {"model": "lm", "prompt": []}, 422, "empty_prompt", "empty"),
    ("max_tokens 0", "/v1/completions", {"model": "lm", "prompt": "x", "max_tokens": 0}, 422, "invalid_value",
     "between 1 and 2000"),
    ("max_tokens 1,000,000", "/v1/completions", {"model": "lm", "prompt": "x", "max_tokens": 1_000_000}, 422,
     "invalid_value", "between 1 and 2000"),
    ("output past the context", "/v1/completions", {"model": "lm", "prompt": "x", "max_tokens": 100}, 422,
     "context_length_exceeded", "context of 64 tokens"),
    ("prompt too long in tokens", "/v1/completions", {"model": "lm", "prompt": "ROMEO: " * 100}, 413,
     "prompt_too_long", "reads at most 64 tokens"),
    ("prompt too long in characters", "/v1/completions", {"model": "long", "prompt": "a" * 6000}, 413,
     "prompt_too_long", "limit is 5,000"),
    ("body over the size limit", "/v1/completions", {"model": "lm", "prompt": "a" * 70_000}, 413,
     "request_too_large", "larger than 65,536 bytes"),
    ("too many choices", "/v1/completions", {"model": "lm", "prompt": ["a", "b", "c"], "n": 8}, 413,
     "too_many_items", "at most 16"),
    ("unsupported option", "/v1/completions", {"model": "lm", "prompt": "x", "logprobs": 2}, 422, "invalid_value",
     "logprobs is not supported"),
    ("model of another task", "/v1/completions", {"model": "clf", "prompt": "x"}, 400, "unsupported_task",
     "can classify, not generate"),
    ("chat without messages", "/v1/chat/completions", {"model": "lm", "messages": []}, 422, "invalid_value",
     "messages"),
    ("chat with an unknown role", "/v1/chat/completions", {"model": "lm", "messages": [{"role": "robot",
                                                                                       "content": "x"}]},
     422, "invalid_value", "messages.0.role"),
    ("classify: empty text", "/v1/classify", {"model": "clf", "input": ["fine", " "]}, 422, "empty_input",
     "input[1] is empty"),
    ("classify: too many texts", "/v1/classify", {"model": "clf", "input": ["x"] * 17}, 413, "too_many_items",
     "at most 16"),
    ("classify: text too long", "/v1/classify", {"model": "clf", "input": "a" * 6000}, 413, "input_too_long",
     "limit is 5,000"),
    ("classify: wrong type", "/v1/classify", {"model": "clf", "input": [1, 2]}, 422, "invalid_value", "input"),
    ("translate: wrong direction", "/v1/translate", {"model": "mt", "input": "x", "target_lang": "en"}, 422,
     "unsupported_direction", "supported directions: en-zh"),
    ("translate: too many beams", "/v1/translate", {"model": "mt", "input": "x", "num_beams": 50}, 422,
     "invalid_value", "num_beams must be at most 8"),
    ("summarize with a translation model", "/v1/summarize", {"model": "mt", "input": "x"}, 400, "unsupported_task",
     "not summarize"),
]


@pytest.mark.parametrize("name,path,body,status,code,text", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_answered_with_an_openai_error(http, name, path, body, status, code, text):
    if isinstance(body, bytes):
        r = http.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = http.post(path, json=body)
    assert_openai_error(r, status, code, text)


def test_unknown_endpoint_and_method(http):
    assert_openai_error(http.get("/v1/engines"), 404, text="no such endpoint")
    assert_openai_error(http.get("/v1/completions"), 405, text="not allowed")


# ---- batching, queueing, disconnects, timeouts -------------------------------------------------------------
class LongStream:
    """A streamed greedy generation of 1500 tokens on the long model, read up to its first text chunk and then
    left unread (the server keeps generating) until ``close()``, which drops the connection."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=60)
        self.response = self.client.send(self.client.build_request(
            "POST", "/v1/completions", json={**LONG, "stream": True}), stream=True)
        assert self.response.status_code == 200
        self.lines = self.response.iter_lines()  # keep a reference: a collected iterator closes the response
        assert next(line for line in self.lines if line.startswith("data:"))

    def close(self) -> None:
        self.response.close()
        self.client.close()


def test_queued_requests_run_as_one_batch_with_the_same_results(server, http, models):
    prompts = ["KING", "ROMEO:", "First", "JULIET:"]
    alone = [models["long"].generate(p, max_tokens=5, temperature=0).text for p in prompts]
    before = metrics_text(http)
    stream = LongStream(server.url)  # keeps the long model's worker busy
    results = {}

    def post(i, p):
        results[i] = httpx.post(server.url + "/v1/completions", timeout=60,
                                json={"model": "long", "prompt": p, "max_tokens": 5, "temperature": 0})

    threads = [threading.Thread(target=post, args=(i, p)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    wait_for(lambda: http.get("/health").json()["queued"]["long"] == 4)
    stream.close()  # the stream's client goes away: its row stops, the 4 waiting requests run together
    for t in threads:
        t.join(60)
    assert [results[i].json()["choices"][0]["text"] for i in range(4)] == alone
    after = metrics_text(http)
    batches = (metric(after, "scratchlm_batch_rows_count", model="long")
               - metric(before, "scratchlm_batch_rows_count", model="long"))
    rows = metric(after, "scratchlm_batch_rows_sum", model="long") - metric(before, "scratchlm_batch_rows_sum",
                                                                             model="long")
    assert (batches, rows) == (2, 5)  # the stream alone, then one batch of the four


def test_client_disconnecting_mid_stream_frees_the_slot(server, http):
    before = metrics_text(http)
    stream = LongStream(server.url)
    assert metric(metrics_text(http), "scratchlm_running_rows", model="long") == 1
    stream.close()
    wait_for(lambda: metric(metrics_text(http), "scratchlm_running_rows", model="long") == 0)
    after = metrics_text(http)
    assert metric(after, "scratchlm_requests_cancelled_total", model="long") == \
        metric(before, "scratchlm_requests_cancelled_total", model="long") + 1
    made = metric(after, "scratchlm_generated_tokens_total", model="long") - \
        metric(before, "scratchlm_generated_tokens_total", model="long")
    assert 0 < made < 1500  # stopped early, not run to max_tokens
    ok = http.post("/v1/completions", json={"model": "long", "prompt": "KING", "max_tokens": 3})
    assert ok.status_code == 200


def test_a_full_queue_answers_429_at_once(models):
    app = create_app({"long": models["long"]}, settings(max_queue=1, max_batch_size=1))
    with ThreadServer(app) as s, httpx.Client(base_url=s.url, timeout=60) as http:
        stream = LongStream(s.url)
        waiting = {}
        t = threading.Thread(target=lambda: waiting.update(r=httpx.post(
            s.url + "/v1/completions", json={"model": "long", "prompt": "KING", "max_tokens": 3}, timeout=60)))
        t.start()
        wait_for(lambda: http.get("/health").json()["queued"]["long"] == 1)
        full = http.post("/v1/completions", json={"model": "long", "prompt": "KING", "max_tokens": 3})
        assert_openai_error(full, 429, "queue_full", "--max-queue")
        assert full.headers["retry-after"] == "1"
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="long", prompt="KING", max_tokens=3)
        stream.close()
        t.join(60)
        assert waiting["r"].status_code == 200  # the queued request still ran
        assert metric(metrics_text(http), "scratchlm_requests_rejected_total", reason="queue_full") == 2


def test_a_request_past_its_timeout_is_cancelled_and_answered_504(models):
    # 50 ms: 1,500 tokens would need 30k tokens/s; with the native decode engine this tiny model wrote them in
    # under the 0.5 s the test used to allow
    app = create_app({"long": models["long"]}, settings(request_timeout_s=0.05))
    with ThreadServer(app) as s, httpx.Client(base_url=s.url, timeout=60) as http:
        r = http.post("/v1/completions", json=LONG)
        assert_openai_error(r, 504, "timeout", "--request-timeout")
        wait_for(lambda: metric(metrics_text(http), "scratchlm_running_rows", model="long") == 0)
        assert metric(metrics_text(http), "scratchlm_requests_cancelled_total", model="long") == 1
        with http.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as streamed:
            events = [json.loads(line[5:]) for line in streamed.iter_lines() if line.startswith("data: {")]
        assert events[-1]["error"]["code"] == "timeout"


# ---- API key, metrics -----------------------------------------------------------------------------------------
def test_api_key_is_required_when_set(models):
    app = create_app({"lm": models["lm"]}, settings(api_key="s3cret"))
    with ThreadServer(app) as s, httpx.Client(base_url=s.url, timeout=60) as http:
        assert_openai_error(http.get("/v1/models"), 401, "invalid_api_key", "Bearer")
        assert_openai_error(http.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        assert_openai_error(http.get("/metrics"), 401)
        assert http.get("/health").status_code == 200 and http.get("/").status_code == 200  # the page asks for it
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="lm", prompt="KING", max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_metrics_are_prometheus_text(http):
    from prometheus_client.parser import text_string_to_metric_families

    http.post("/v1/completions", json={"model": "lm", "prompt": "KING", "max_tokens": 3})
    text = metrics_text(http)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"scratchlm_requests", "scratchlm_request_duration_seconds", "scratchlm_generated_tokens",
            "scratchlm_generation_tokens_per_second", "scratchlm_queue_depth", "scratchlm_batch_rows",
            "process_resident_memory_bytes"} <= names
    assert metric(text, "scratchlm_requests_total", endpoint="/v1/completions", status="200") >= 1
    assert metric(text, "scratchlm_request_duration_seconds_count", endpoint="/v1/completions") >= 1
    assert metric(text, "scratchlm_generated_tokens_total", model="lm") >= 3
    assert metric(text, "scratchlm_generation_tokens_per_second", model="lm") > 0
    assert metric(text, "process_resident_memory_bytes") > 10e6


# ---- the command line: start-up failures, graceful shutdown ---------------------------------------------------
def test_model_specs_and_load_failures(folders, tmp_path):
    assert parse_model_specs(["a=x/y", "x/y", "b=c=d"]) == [("a", "x/y"), (None, "x/y"), ("b", "c=d")]
    with pytest.raises(ServeError, match="cannot serve model missing=.*model folder not found"):
        load_models([f"missing={tmp_path / 'nope'}"], log=lambda *a: None)
    with pytest.raises(ServeError, match="two models are named 'same'"):
        load_models([f"same={folders['lm']}", f"same={folders['clf']}"], log=lambda *a: None)


def test_a_model_that_fails_to_load_stops_the_server_with_the_reason(folders, tmp_path, cli_env):
    broken = tmp_path / "broken"
    shutil.copytree(folders["lm"], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "scratchlm.serve", "--model", f"good={folders['lm']}",
                           "--model", f"bad={broken}", "--port", str(port)], env=cli_env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"cannot serve model bad={broken}" in proc.stderr and "model.safetensors" in proc.stderr
    assert "http://" not in proc.stdout  # it never listened
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_sigterm_finishes_in_flight_requests_then_exits(folders, cli_env):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "scratchlm.serve", "--model", f"long={folders['long']}",
                             "--port", str(port), "--log-level", "warning"], env=cli_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def up():
            try:
                return httpx.get(url + "/health", timeout=2).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                return False

        wait_for(up, timeout=300, interval=0.2)  # a cold start imports torch and FastAPI: slow on a busy machine
        result = {}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(
            url + "/v1/completions", json={**LONG, "max_tokens": 600}, timeout=120)))
        t.start()
        wait_for(lambda: metric(httpx.get(url + "/metrics").text, "scratchlm_running_rows", model="long") == 1)
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        assert result["r"].status_code == 200, result["r"].text
        assert result["r"].json()["usage"]["completion_tokens"] == 600  # finished, not cut off
        assert proc.wait(60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_serve_verb_plugs_into_an_argparse_cli(monkeypatch):
    import argparse

    monkeypatch.delenv("SCRATCHLM_API_KEY", raising=False)
    from scratchlm.cli.serve import add_serve_parser, cmd_serve, settings_from_args

    parser = argparse.ArgumentParser(prog="scratchlm")
    add_serve_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["serve", "--model", "a=x", "--model", "y", "--max-batch-size", "1"])
    assert args.fn is cmd_serve and args.model == ["a=x", "y"]
    s = settings_from_args(args)
    assert (s.host, s.port, s.max_batch_size, s.api_key) == ("127.0.0.1", 8000, 1, None)
    with pytest.raises(ValueError, match="--max-queue must be >= 1"):
        settings_from_args(parser.parse_args(["serve", "--model", "x", "--max-queue", "0"]))
