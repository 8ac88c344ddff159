"""Helpers for the API and server tests: tiny task model folders (seeded random weights, saved without
training) and a uvicorn server on a free loopback port in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import torch
from conftest import tiny_model_config


def save_lm(folder: Path, tokenizer, *, block_size: int = 64, seed: int = 0) -> Path:
    from scratchlm.config import to_dict
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.model.transformer import Transformer

    torch.manual_seed(seed)
    model = Transformer(tiny_model_config(tokenizer.vocab_size, block_size=block_size))
    config = {"task": "lm", "tokenizer_fingerprint": tokenizer.fingerprint, "model": to_dict(model.cfg)}
    ckpt.save_checkpoint(folder, model_tensors=ckpt.model_state(model), config=config, tokenizer=tokenizer)
    return folder


def save_classifier(folder: Path, tokenizer, labels=("neg", "pos"), seed: int = 0, **extra_config) -> Path:
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.model.heads import SequenceClassifier
    from scratchlm.model.transformer import Transformer
    from scratchlm.stages.classify import model_config

    torch.manual_seed(seed)
    model = SequenceClassifier(Transformer(tiny_model_config(tokenizer.vocab_size, block_size=64)), len(labels),
                               pooling="mean", pad_id=tokenizer.pad_id, label_names=list(labels))
    config = {"task": "classify", "tokenizer_fingerprint": tokenizer.fingerprint, **model_config(model),
              "label_names": list(labels), "label_values": list(labels), "max_length": 64, "head_fraction": 0.25,
              **extra_config}
    ckpt.save_checkpoint(folder, model_tensors=ckpt.model_state(model), config=config, tokenizer=tokenizer)
    return folder


def save_seq2seq(folder: Path, tokenizer, task: str = "translate", seed: int = 0) -> Path:
    from scratchlm.config import to_dict
    from scratchlm.infer.seq2seq import DecodeConfig
    from scratchlm.model import checkpoint as ckpt
    from scratchlm.model.transformer import Transformer

    torch.manual_seed(seed)
    model = Transformer(tiny_model_config(tokenizer.vocab_size, block_size=64))
    config = {"task": task, "tokenizer_fingerprint": tokenizer.fingerprint, "model": to_dict(model.cfg),
              "src_lang": "en", "tgt_lang": "zh" if task == "translate" else "en", "max_target_tokens": 16,
              "decode": to_dict(DecodeConfig(num_beams=2, max_new_tokens=8))}
    ckpt.save_checkpoint(folder, model_tensors=ckpt.model_state(model), config=config, tokenizer=tokenizer)
    return folder


class ThreadServer:
    """``uvicorn`` serving ``app`` on 127.0.0.1 and a free port, in a daemon thread; use as a context manager."""

    def __init__(self, app, shutdown_timeout: float = 10.0) -> None:
        import uvicorn

        from scratchlm.serve.server import bind, uvicorn_config

        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        # the served configuration (read deadlines, keep-alive, connection cap) from the app's settings
        self.server = uvicorn.Server(uvicorn_config(app, app.state.serve.settings, log_level="warning",
                                                    timeout_graceful_shutdown=shutdown_timeout))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(text: str, name: str, **labels) -> float:
    """One sample's value from Prometheus text (0.0 when the series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def wait_for(check, timeout: float = 30.0, interval: float = 0.02):
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
