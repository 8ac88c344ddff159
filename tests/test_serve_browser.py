"""The web page in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright) loads the
page, runs a classification and a streamed generation, checks what is shown against the Python API, and saves
a screenshot. Skips with the reason where Playwright or Chromium is missing (``.ci/install_chromium.sh``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from serve_utils import ThreadServer, save_classifier  # noqa: E402

import scratchlm  # noqa: E402
from scratchlm.serve.app import create_app  # noqa: E402
from scratchlm.serve.settings import ServeSettings  # noqa: E402

CHROMIUM = os.environ.get("SCRATCHLM_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no Chromium at {CHROMIUM}: install Debian's chromium package "
                                       f"(.ci/install_chromium.sh) or set SCRATCHLM_CHROMIUM")


@pytest.fixture(scope="module")
def served(prepared, tiny_lm_dir, tmp_path_factory):
    clf_dir = save_classifier(tmp_path_factory.mktemp("browser") / "clf" / "model", prepared.tokenizer)
    models = {"lm": scratchlm.load(tiny_lm_dir, name="lm"), "clf": scratchlm.load(clf_dir, name="clf")}
    with ThreadServer(create_app(models, ServeSettings())) as server:
        yield server, models


def test_the_page_classifies_and_streams_a_generation(served, tmp_path, monkeypatch):
    server, models = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 620})
            elsewhere, console_errors = [], []
            page.on("request", lambda r: r.url.startswith(server.url) or elsewhere.append(r.url))
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.goto(server.url + "/")
            page.wait_for_selector("#model option[value=clf]", state="attached")
            page.wait_for_selector("#health[data-state=ok]")

            # classification: one bar per class, the predicted class first and highlighted
            page.select_option("#model", "clf")
            assert page.eval_on_selector_all("#task option", "os => os.map(o => o.value)") == ["classify"]
            page.fill("#input", "a fine film with a great cast")
            page.click("#run")
            page.wait_for_selector("#status[data-state=done]")
            expected = models["clf"].classify("a fine film with a great cast")
            rows = page.locator(".class-row")
            assert rows.count() == 2
            shown = {rows.nth(i).get_attribute("data-label"): float(rows.nth(i).get_attribute("data-probability"))
                     for i in range(2)}
            assert shown == pytest.approx(expected.probabilities, abs=1e-5)
            top = page.locator(".class-row.top")
            assert top.get_attribute("data-label") == expected.label
            assert top.locator(".pct").inner_text() == f"{100 * expected.probability:.1f}%"
            fill, bar = top.locator(".fill").bounding_box(), top.locator(".bar").bounding_box()
            assert fill["width"] / bar["width"] == pytest.approx(expected.probability, abs=0.01)  # drawn to scale
            assert page.is_hidden("#seq2seq-options") and page.is_hidden("#generated")
            assert expected.label in page.inner_text("#status")

            # generation: the text streams in (several updates), and equals the API's greedy continuation
            page.select_option("#model", "lm")
            assert page.eval_on_selector_all("#task option", "os => os.map(o => o.value)") == ["generate", "chat"]
            page.fill("#input", "ROMEO:")
            # the PyTorch decode path, and 48 tokens: the native engine writes 16 tokens of this tiny model within
            # one network read, and the page then has nothing to stream in pieces
            monkeypatch.setenv("SCRATCHLM_DECODE_ENGINE", "torch")
            page.fill("#max-tokens", "48")
            page.fill("#temperature", "0")
            page.evaluate("""() => {
                window.__updates = 0;
                new MutationObserver(() => window.__updates++)
                    .observe(document.getElementById('completion'), {childList: true, characterData: true,
                                                                     subtree: true});
            }""")
            assert page.is_visible("#gen-options") and page.is_hidden("#seq2seq-options")
            page.click("#run")
            page.wait_for_selector("#status[data-state=done]")
            want = models["lm"].generate("ROMEO:", max_tokens=48, temperature=0)
            assert page.inner_text("#prompt-echo") == "ROMEO:"
            assert page.locator("#completion").evaluate("e => e.textContent") == want.text
            assert page.evaluate("window.__updates") > 1
            assert f"{want.completion_tokens} tokens" in page.inner_text("#status")

            # a bad request shows the server's message
            page.fill("#max-tokens", "5000")
            page.click("#run")
            page.wait_for_selector("#status[data-state=error]")
            assert "max_tokens must be between 1 and 1024" in page.inner_text("#error")
            page.fill("#max-tokens", "16")
            page.click("#run")
            page.wait_for_selector("#status[data-state=done]")

            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
            if os.environ.get("SCRATCHLM_SCREENSHOT"):
                shutil.copy(shot, os.environ["SCRATCHLM_SCREENSHOT"])
            assert not elsewhere, f"the page fetched from other hosts: {elsewhere}"
            assert not [e for e in console_errors if "422" not in e], console_errors
        finally:
            browser.close()
