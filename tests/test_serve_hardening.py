"""Fault injection against the server: slow and stalled clients (headers, bodies), too many connections, Host
headers (DNS rebinding), the API key's sources and the page's storage, filesystem paths in errors, special-token
strings in user text, integers out of range, and clients that disconnect mid-request.

Every probe goes to 127.0.0.1 only, on a server in this process (tiny models), and is bounded in time and count."""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from conftest import serve_settings  # noqa: E402
from serve_utils import ThreadServer, metric, wait_for  # noqa: E402

import scratchlm  # noqa: E402
from scratchlm.serve.app import STATIC, create_app  # noqa: E402
from scratchlm.serve.settings import ServeSettings  # noqa: E402
from scratchlm.tokenizer import SPECIAL_TOKENS  # noqa: E402


@pytest.fixture(scope="module")
def models(task_folders):
    return {name: scratchlm.load(path, name=name) for name, path in task_folders.items()}


def settings(**kw) -> ServeSettings:
    return serve_settings(**{"default_max_tokens": 8, **kw})


@pytest.fixture(scope="module")
def server_settings():
    return settings()


def openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code is not None:
        assert err["code"] == code, err
    return err


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sockets: list[socket.socket], limit_s: float, t0: float | None = None
                      ) -> dict[socket.socket, tuple[float, bytes]]:
    """Read every socket until the server closes it: {socket: (seconds from ``t0`` until closed, bytes
    received)}; sockets still open ``limit_s`` after ``t0`` are left out."""
    t0 = time.monotonic() if t0 is None else t0
    got = {s: b"" for s in sockets}
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    sel = selectors.DefaultSelector()
    for s in sockets:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    try:
        while len(closed) < len(sockets) and time.monotonic() - t0 < limit_s:
            for key, _ in sel.select(timeout=0.1):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    got[s] += data
                else:
                    closed[s] = (time.monotonic() - t0, got[s])
                    sel.unregister(s)
    finally:
        sel.close()
    return closed


# ---- read deadlines and the connection cap (a real uvicorn on 127.0.0.1) -----------------------------------
def test_slow_and_silent_headers_are_closed_within_the_header_timeout_while_requests_are_served(models):
    timeout, n = 1.0, 40
    app = create_app({"lm": models["lm"]}, settings(header_timeout_s=timeout))
    with ThreadServer(app) as s, httpx.Client(base_url=s.url, timeout=30) as http:
        t0 = time.monotonic()
        slow = [connect(s.port) for _ in range(n)]
        silent = [connect(s.port) for _ in range(5)]  # never send a byte
        for c in slow:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        stop = threading.Event()

        def trickle():  # one byte per connection every 0.2 s: a deadline that restarts on data would never pass
            while not stop.wait(0.2):
                for c in slow:
                    try:
                        c.send(b"a")
                    except OSError:
                        pass

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            assert http.get("/health").status_code == 200  # served meanwhile
            assert http.post("/v1/completions", json={"model": "lm", "prompt": "Hi", "max_tokens": 2}
                             ).status_code == 200
            closed = read_until_closed(slow + silent, limit_s=timeout + 4, t0=t0)
        finally:
            stop.set()
            t.join(5)
            for c in slow + silent:
                c.close()
        assert len(closed) == n + 5, f"{n + 5 - len(closed)} connections were still open after {timeout + 4} s"
        assert max(sec for sec, _ in closed.values()) <= timeout + 2.5
        for _, data in closed.values():
            assert data.startswith(b"HTTP/1.1 408"), data[:100]
            assert b"request_timeout" in data and b"--header-timeout" in data
        assert metric(http.get("/metrics").text, "scratchlm_requests_rejected_total", reason="header_timeout") \
            == n + 5


def test_a_kept_alive_connection_gets_the_header_deadline_again(models):
    app = create_app({"lm": models["lm"]}, settings(header_timeout_s=1.0, keep_alive_s=30))
    with ThreadServer(app) as s:
        c = connect(s.port)
        try:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while b"\r\n\r\n" not in first or not first.endswith(b"}"):  # the whole (JSON) response
                first += c.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            time.sleep(1.5)  # idle longer than the header timeout: keep-alive (30 s) keeps it open
            c.sendall(b"GET /health HTTP/1.1\r\nHo")  # then a request that never finishes its headers
            closed = read_until_closed([c], limit_s=5)
            assert c in closed and closed[c][0] <= 2.5 and closed[c][1].startswith(b"HTTP/1.1 408")
        finally:
            c.close()


def test_a_body_that_does_not_arrive_is_answered_408_within_the_body_timeout(models):
    app = create_app({"lm": models["lm"]}, settings(body_timeout_s=1.0))
    with ThreadServer(app) as s, httpx.Client(base_url=s.url, timeout=30) as http:
        c = connect(s.port)
        try:
            c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 200\r\n\r\n{\"model\": \"lm\", ")
            closed = read_until_closed([c], limit_s=5)
        finally:
            c.close()
        assert c in closed and closed[c][0] <= 2.5
        head, _, body = closed[c][1].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert http.get("/health").status_code == 200
        wait_for(lambda: metric(http.get("/metrics").text, "scratchlm_requests_in_flight") == 1)  # this one


def test_past_max_connections_a_new_connection_is_answered_503(models):
    app = create_app({"lm": models["lm"]}, settings(max_connections=4, header_timeout_s=30))
    with ThreadServer(app) as s:
        held = [connect(s.port) for _ in range(4)]
        extra = None
        try:
            wait_for(lambda: len(s.server.server_state.connections) == 4, timeout=10)
            extra = connect(s.port)
            closed = read_until_closed([extra], limit_s=5)
            assert extra in closed and closed[extra][1].startswith(b"HTTP/1.1 503")
            assert b"too_many_connections" in closed[extra][1]
        finally:
            for c in held + ([extra] if extra else []):
                c.close()
        wait_for(lambda: len(s.server.server_state.connections) == 0, timeout=10)
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200


def test_disconnecting_halfway_through_a_body_leaves_the_server_healthy(server, http):
    for _ in range(5):
        c = connect(server.port)
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 500\r\n\r\n{\"model\": \"lm\", \"prompt\": \"a")
        c.close()
    wait_for(lambda: metric(http.get("/metrics").text, "scratchlm_requests_in_flight") == 1)  # the /metrics call
    r = http.post("/v1/completions", json={"model": "lm", "prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 200


def test_settings_refuse_nonsense_limits():
    for kw, flag in (({"header_timeout_s": 0}, "--header-timeout"), ({"body_timeout_s": -1}, "--body-timeout"),
                     ({"keep_alive_s": 0}, "--keep-alive-timeout"), ({"max_connections": 0}, "--max-connections"),
                     ({"allowed_hosts": ()}, "--allowed-host")):
        with pytest.raises(ValueError, match=flag):
            ServeSettings(**kw).validate()


# ---- Host allow-list -------------------------------------------------------------------------------------
def test_a_foreign_host_header_is_refused(server, http):
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]:80"):
        err = openai_error(http.get("/v1/models", headers={"Host": host}), 400, "invalid_host")
        assert "--allowed-host" in err["message"]
        openai_error(http.post("/v1/completions", headers={"Host": host}, json={"model": "lm", "prompt": "x"}),
                     400, "invalid_host")
        assert http.get("/", headers={"Host": host}).status_code == 400
    for host in ("127.0.0.1", f"127.0.0.1:{server.port}", f"localhost:{server.port}", "LOCALHOST", "[::1]:80"):
        assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host


def test_the_allow_list_is_configurable(models):
    s = settings(allowed_hosts=("api.example.com", "*.internal"))
    s.validate()
    assert s.host_allowed("api.example.com:443") and s.host_allowed("API.example.COM")
    assert s.host_allowed("a.b.internal")
    assert not s.host_allowed("127.0.0.1") and not s.host_allowed("example.com") and not s.host_allowed("internal")
    assert not s.host_allowed("")
    anyhost = settings(allowed_hosts=("*",))
    anyhost.validate()
    assert anyhost.host_allowed("whatever.example") and anyhost.host_allowed("")
    app = create_app({"lm": models["lm"]}, settings(allowed_hosts=("api.example.com",)))
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        assert http.get("/health", headers={"Host": "api.example.com"}).status_code == 200
        openai_error(http.get("/health"), 400, "invalid_host")  # Host: 127.0.0.1:port is not on this list


def test_binding_a_specific_address_allows_it():
    from scratchlm.serve.server import add_bound_host

    s = ServeSettings()
    add_bound_host(s, "10.1.2.3")
    add_bound_host(s, "0.0.0.0")
    assert s.allowed_hosts == ("localhost", "127.0.0.1", "::1", "10.1.2.3")


# ---- the API key: never required on argv; the page keeps it for the tab ----------------------------------
def parse_serve(argv: list[str]):
    from scratchlm.cli.serve import add_serve_parser

    parser = argparse.ArgumentParser(prog="scratchlm")
    add_serve_parser(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(["serve", "--model", "x", *argv])


def test_the_api_key_comes_from_a_file_or_the_environment(tmp_path, monkeypatch, capsys):
    from scratchlm.cli.serve import settings_from_args

    monkeypatch.delenv("SCRATCHLM_API_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-from-file\n")
    assert settings_from_args(parse_serve(["--api-key-file", str(key_file)])).api_key == "s3cret-from-file"
    monkeypatch.setenv("SCRATCHLM_API_KEY", "s3cret-from-env")
    assert settings_from_args(parse_serve([])).api_key == "s3cret-from-env"
    assert settings_from_args(parse_serve(["--api-key-file", str(key_file)])).api_key == "s3cret-from-file"
    assert capsys.readouterr().err == ""
    # still accepted on argv for old scripts, with a warning that it is visible in ps
    assert settings_from_args(parse_serve(["--api-key", "on-argv"])).api_key == "on-argv"
    assert "(ps" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        settings_from_args(parse_serve(["--api-key-file", str(empty)]))
    with pytest.raises(ValueError, match="cannot read"):
        settings_from_args(parse_serve(["--api-key-file", str(tmp_path / "missing")]))
    with pytest.raises(ValueError, match="once"):
        settings_from_args(parse_serve(["--api-key-file", str(key_file), "--api-key", "x"]))


def test_the_serve_flags_reach_the_settings(monkeypatch):
    from scratchlm.cli.serve import settings_from_args

    monkeypatch.delenv("SCRATCHLM_API_KEY", raising=False)
    s = settings_from_args(parse_serve(["--header-timeout", "3", "--body-timeout", "4", "--keep-alive-timeout", "6",
                                        "--max-connections", "7", "--allowed-host", "a.example",
                                        "--allowed-host", "[::1]"]))
    assert (s.header_timeout_s, s.body_timeout_s, s.keep_alive_s, s.max_connections) == (3, 4, 6, 7)
    assert s.allowed_hosts == ("a.example", "::1")
    d = settings_from_args(parse_serve([]))
    assert d.allowed_hosts == ("localhost", "127.0.0.1", "::1") and d.header_timeout_s == 10


def test_the_page_keeps_the_key_for_the_tab_only():
    js = (STATIC / "app.js").read_text()
    assert "sessionStorage.setItem(\"scratchlm-api-key\"" in js
    assert "localStorage.setItem" not in js and "localStorage.getItem" not in js


# ---- no filesystem paths in error bodies --------------------------------------------------------------------
def private_strings(models) -> list[str]:
    out = []
    for m in models.values():
        out += [str(m.folder), str(m.folder.resolve()), m.folder.parent.name + "/" + m.folder.name]
    return out


def test_errors_do_not_show_where_the_models_live(server, http, models, monkeypatch):
    answers = [
        http.post("/v1/classify", json={"model": "lm", "input": "x"}),  # the wrong task for the model
        http.post("/v1/summarize", json={"model": "mt", "input": "x"}),
        http.post("/v1/completions", json={"model": "clf", "prompt": "x"}),
    ]

    def broken(prompt):
        raise OSError(f"cannot read {models['lm'].folder / 'model.safetensors'}")

    monkeypatch.setattr(models["lm"], "encode", broken)
    answers.append(http.post("/v1/completions", json={"model": "lm", "prompt": "x", "max_tokens": 2}))
    for r in answers:
        assert 400 <= r.status_code < 600, r.text
        text = r.text
        for private in private_strings(models):
            assert private not in text, (private, text)
        assert "/tmp" not in text and "pytest" not in text, text
    err = answers[-1].json()["error"]
    assert answers[-1].status_code == 500 and "OSError" in err["message"] and "error id" in err["message"]


def test_a_streamed_failure_does_not_show_paths(server, http, models, monkeypatch):
    import scratchlm.api as api

    def broken(*a, **kw):
        raise RuntimeError(f"weights at {models['lm'].folder} are corrupt")

    monkeypatch.setattr(api, "generate", broken)
    with http.stream("POST", "/v1/completions", json={"model": "lm", "prompt": "Hi", "max_tokens": 2,
                                                      "stream": True}) as r:
        text = "".join(r.iter_text())
    assert "generation failed" in text and "RuntimeError" in text
    for private in private_strings(models):
        assert private not in text


def test_redact_keeps_urls_and_hides_paths():
    from scratchlm.serve.errors import redact

    assert redact("no such endpoint: POST /v1/foo/bar") == "no such endpoint: POST /v1/foo/bar"
    assert "/tmp/x" not in redact("cannot open /tmp/x/model/config.json")
    assert "Users" not in redact(r"cannot open C:\Users\me\model")
    assert redact("1/2 of the text") == "1/2 of the text"


# ---- special-token strings in user text are text -------------------------------------------------------
def test_special_token_strings_in_user_text_encode_as_plain_text(models):
    tok = models["lm"].tokenizer
    text = "Hello " + "".join(SPECIAL_TOKENS) + " world"
    assert any(i < len(SPECIAL_TOKENS) for i in tok.encode(text, allow_special=True))  # the raw tokenizer: ids
    for ids in (models["lm"].encode(text), tok.encode(text, allow_special=False), tok.plain_text().encode(text),
                tok.plain_text().encode_batch([text])[0]):
        assert not any(i < len(SPECIAL_TOKENS) for i in ids)
        assert tok.decode(ids, skip_special=False) == text
    assert tok.plain_text().encode("x", bos=True, eos=True)[::2] == [tok.bos_id, tok.eos_id]  # by id, still
    assert tok.plain_text().fingerprint == tok.fingerprint
    for name in ("clf", "mt", "sum"):  # classify / translate / summarize inputs are user text too
        assert models[name].loaded.tokenizer.allows_special is False


def test_a_default_tokenizer_still_reads_special_token_strings(prepared):
    tok = prepared.tokenizer
    assert tok.allows_special and tok.encode("<|eos|>") == [tok.eos_id]  # data preparation is unchanged


def fake_generate(eos_ends_the_document: int):
    """Stands in for the network: a row whose prompt holds the <|eos|> id ends at once (as a model that read
    "end of document" would), any other row writes its max_new_tokens tokens."""

    def generate(model, prompts, cfg, *, pad_id, eos_id, callback=None):
        out = []
        for row, ids in enumerate(prompts):
            new = [] if eos_id in ids else [eos_ends_the_document] * cfg.max_new_tokens
            for t in new:
                if callback is not None and callback(row, t):
                    break
            out.append(new)
        return out

    return generate


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_eos_in_a_prompt_does_not_end_generation(server, http, models, monkeypatch, path):
    import scratchlm.api as api

    tok = models["lm"].tokenizer
    monkeypatch.setattr(api, "generate", fake_generate(tok.encode("a")[0]))
    text = "The end. <|eos|>"
    body = {"model": "lm", "max_tokens": 4, "temperature": 0}
    body |= {"prompt": text} if path == "/v1/completions" else {"messages": [{"role": "user", "content": text}]}
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 4
    if path == "/v1/completions":
        assert r.json()["usage"]["prompt_tokens"] == len(tok.encode(text, allow_special=False))


# ---- integers out of range -----------------------------------------------------------------------------------
HUGE = 2**70
OUT_OF_RANGE = [
    ("/v1/completions", {"model": "lm", "prompt": "x", "seed": HUGE}, "seed", "integer_above_max_value"),
    ("/v1/completions", {"model": "lm", "prompt": "x", "seed": -1}, "seed", "integer_below_min_value"),
    ("/v1/completions", {"model": "lm", "prompt": "x", "max_tokens": HUGE}, "max_tokens", "integer_above_max_value"),
    ("/v1/completions", {"model": "lm", "prompt": "x", "n": HUGE}, "n", "integer_above_max_value"),
    ("/v1/completions", {"model": "lm", "prompt": "x", "top_k": HUGE}, "top_k", "integer_above_max_value"),
    ("/v1/completions", {"model": "lm", "prompt": "x", "best_of": HUGE}, "best_of", "integer_above_max_value"),
    ("/v1/chat/completions", {"model": "lm", "messages": [{"role": "user", "content": "x"}], "seed": HUGE}, "seed",
     "integer_above_max_value"),
    ("/v1/chat/completions", {"model": "lm", "messages": [{"role": "user", "content": "x"}],
                              "max_completion_tokens": HUGE}, "max_completion_tokens", "integer_above_max_value"),
    ("/v1/translate", {"model": "mt", "input": "x", "num_beams": HUGE}, "num_beams", "integer_above_max_value"),
    ("/v1/summarize", {"model": "sum", "input": "x", "max_tokens": HUGE}, "max_tokens", "integer_above_max_value"),
]


@pytest.mark.parametrize("path,body,param,code", OUT_OF_RANGE, ids=[f"{o[0]}:{o[2]}:{o[3]}" for o in OUT_OF_RANGE])
def test_integers_out_of_range_are_answered_400_naming_the_parameter(http, path, body, param, code):
    err = openai_error(http.post(path, json=body), 400, code)
    assert err["param"] == param and err["message"].startswith(f"{param}: ")
    assert "Overflow" not in err["message"]


def test_the_largest_seed_is_accepted(http):
    body = {"model": "lm", "prompt": "Hi", "max_tokens": 2, "seed": 2**63 - 1}
    first, second = (http.post("/v1/completions", json=body) for _ in range(2))
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["text"] == second.json()["choices"][0]["text"]
