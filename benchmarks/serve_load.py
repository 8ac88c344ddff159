"""Load test of ``scratchlm serve``: concurrent clients, mixed requests, with and without request batching.

    python benchmarks/serve_load.py                                   # runs/imdb_lm + runs/imdb/decoder-full
    python benchmarks/serve_load.py --lm DIR --classifier DIR --requests 2000 --clients 16 --json out.json

For each mode (``--max-batch-size 16``, then ``1`` = no batching) it starts the server as a subprocess on a
free loopback port, sends ``--warmup`` requests (not counted), then ``--requests`` requests from ``--clients``
concurrent clients: 40% completions, 20% streamed completions, 20% chat completions, 20% classifications
(the mix is seeded; without ``--classifier`` those become completions). Generation samples (temperature 0.8,
top-p 0.95, no seed, so requests may share a batch) ``--max-tokens`` tokens at most. Reported: failed requests
(any status but 200, or a stream without ``[DONE]``), requests/s, p50/p99 latency (to the last byte),
generated tokens/s (the server's own counter), the mean batch size, and the server's resident memory when
ready, after the warmup and at the end (growth is measured from after the warmup).

With ``--slow-headers N`` (default 500) the first mode also runs a slowloris probe while its requests are
measured: N connections send a request line and part of a header, then one more byte every second and never
finish; the server (``--header-timeout`` seconds, default 10) must close every one of them within that deadline
(plus ``--slack`` seconds) while the normal requests are answered. Reported: how many were opened, closed in time,
closed late, still open, and the latest close.

Bounded: traffic goes to 127.0.0.1 only; a mode stops sending after ``--max-seconds`` (the report says how
many requests were sent); the server is stopped with SIGTERM (then killed) whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["This movie was", "I watched this film last night and", "The acting in this picture",
           "Honestly, the worst part of the movie", "A classic that", "The director clearly",
           "My favourite scene is", "I expected more from"]
REVIEWS = ["A wonderful, moving film with a superb cast.", "Dull, predictable and far too long.",
           "The plot made no sense but the music was lovely.", "One of the best films I have seen this year.",
           "I walked out after an hour. Avoid.", "Charming, funny and beautifully shot."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def make_requests(n: int, seed: int, max_tokens: int, with_classifier: bool) -> list[tuple[str, dict, bool]]:
    rng = random.Random(seed)
    sampling = {"max_tokens": max_tokens, "temperature": 0.8, "top_p": 0.95}
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2 and with_classifier:
            out.append(("/v1/classify", {"model": "clf", "input": rng.choice(REVIEWS)}, False))
        elif r < 0.4:
            out.append(("/v1/chat/completions", {"model": "lm", **sampling, "messages": [
                {"role": "user", "content": rng.choice(PROMPTS) + "?"}]}, False))
        elif r < 0.6:
            out.append(("/v1/completions", {"model": "lm", **sampling, "prompt": rng.choice(PROMPTS),
                                            "stream": True}, True))
        else:
            out.append(("/v1/completions", {"model": "lm", **sampling, "prompt": rng.choice(PROMPTS)}, False))
    return out


async def one(client: httpx.AsyncClient, path: str, body: dict, stream: bool) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    try:
        if stream:
            done = False
            async with client.stream("POST", path, json=body) as r:
                if r.status_code != 200:
                    return False, time.perf_counter() - t0, f"HTTP {r.status_code}"
                async for line in r.aiter_lines():
                    done = done or line == "data: [DONE]"
            return done, time.perf_counter() - t0, "" if done else "stream without [DONE]"
        r = await client.post(path, json=body)
        return r.status_code == 200, time.perf_counter() - t0, "" if r.status_code == 200 else f"HTTP {r.status_code}"
    except httpx.HTTPError as e:
        return False, time.perf_counter() - t0, f"{type(e).__name__}: {e}"


async def slow_header_probe(port: int, n: int, limit_s: float) -> dict:
    """``n`` slowloris connections to 127.0.0.1:``port``: each sends part of its headers, then a byte a second;
    returns when the server has closed them all or ``limit_s`` has passed (then closes the rest itself)."""
    t0 = time.perf_counter()
    closed_after: list[float] = []
    stop = asyncio.Event()

    async def one_connection() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            closed_after.append(float("nan"))  # refused: counted as not opened
            return
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()

            async def trickle() -> None:
                while not stop.is_set():
                    await asyncio.sleep(1.0)
                    writer.write(b"a")
                    await writer.drain()

            feeding = asyncio.create_task(trickle())
            try:
                while await reader.read(65536):  # the 408, then EOF when the server closes the connection
                    pass
                closed_after.append(time.perf_counter() - t0)
            except (ConnectionError, OSError):
                closed_after.append(time.perf_counter() - t0)
            finally:
                feeding.cancel()
        finally:
            writer.close()

    tasks = [asyncio.create_task(one_connection()) for _ in range(n)]
    done, pending = await asyncio.wait(tasks, timeout=limit_s)
    stop.set()
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    closed = [c for c in closed_after if c == c]
    return {"opened": n - (len(closed_after) - len(closed)), "closed": len(closed), "still_open": len(pending),
            "closed_s": closed}


async def drive(url: str, requests: list, clients: int, max_seconds: float, slow_headers: int = 0,
                header_timeout: float = 10.0, slack: float = 2.0) -> dict:
    todo = iter(requests)
    latencies, failures = [], []
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker():
            for path, body, stream in todo:
                if time.perf_counter() > deadline:
                    return
                ok, seconds, why = await one(client, path, body, stream)
                latencies.append(seconds)
                if not ok:
                    failures.append(f"{path}: {why}")

        t0 = time.perf_counter()
        probe = None
        if slow_headers:
            port = int(url.rsplit(":", 1)[1])
            probe = asyncio.create_task(slow_header_probe(port, slow_headers, header_timeout + slack + 10))
            await asyncio.sleep(0.5)  # the probe's connections are open before the measured requests start
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        slow = await probe if probe is not None else None
    out = {"sent": len(latencies), "failed": len(failures), "failures": failures[:10], "wall_s": wall,
           "latencies": latencies}
    if slow is not None:
        times = slow.pop("closed_s")
        slow.update(header_timeout_s=header_timeout, closed_in_time=sum(t <= header_timeout + slack for t in times),
                    closed_late=sum(t > header_timeout + slack for t in times),
                    latest_close_s=max(times, default=float("nan")),
                    earliest_close_s=min(times, default=float("nan")))
        out["slow_headers"] = slow
    return out


def run_mode(args, batch: int, slow_headers: int = 0) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "scratchlm.serve", "--model", f"lm={args.lm}", "--port", str(port),
           "--max-batch-size", str(batch), "--max-queue", str(max(64, 4 * args.clients)), "--log-level", "warning",
           "--max-tokens-limit", str(max(args.max_tokens, 16)), "--header-timeout", str(args.header_timeout)]
    if args.classifier:
        cmd += ["--model", f"clf={args.classifier}"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited at start:\n{proc.stderr.read()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 300 s")
            time.sleep(0.2)
        rss_ready = rss_mb(proc.pid)
        with_clf = bool(args.classifier)
        asyncio.run(drive(url, make_requests(args.warmup, args.seed + 1, args.max_tokens, with_clf), args.clients,
                          args.max_seconds))
        rss_warm = rss_mb(proc.pid)
        before = httpx.get(url + "/metrics", timeout=30).text
        result = asyncio.run(drive(url, make_requests(args.requests, args.seed, args.max_tokens, with_clf),
                                   args.clients, args.max_seconds, slow_headers, args.header_timeout, args.slack))
        after = httpx.get(url + "/metrics", timeout=30).text
        rss_end = rss_mb(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    lat = sorted(result.pop("latencies"))
    def grew(name: str) -> float:
        return metric_sum(after, name) - metric_sum(before, name)

    tokens, rows, batches = (grew(n) for n in ("scratchlm_generated_tokens_total", "scratchlm_batch_rows_sum",
                                               "scratchlm_batch_rows_count"))
    return {"max_batch_size": batch, **result, "requests_per_s": result["sent"] / result["wall_s"],
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "generated_tokens_per_s": tokens / result["wall_s"], "mean_batch_rows": rows / max(batches, 1),
            "rss_ready_mb": rss_ready, "rss_after_warmup_mb": rss_warm, "rss_end_mb": rss_end,
            "rss_growth_pct": 100 * (rss_end - rss_warm) / rss_warm}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm", default="runs/imdb_lm/model", help="language model folder")
    p.add_argument("--classifier", default="runs/imdb/decoder-full/model",
                   help="classifier folder ('' = completions instead of classifications)")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--warmup", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 1], help="server --max-batch-size per mode")
    p.add_argument("--max-seconds", type=float, default=900, help="per mode: stop sending after this")
    p.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slow-headers", type=int, default=500,
                   help="slowloris connections opened during the first mode (0 = no probe)")
    p.add_argument("--header-timeout", type=float, default=10.0, help="the server's --header-timeout")
    p.add_argument("--slack", type=float, default=2.0,
                   help="seconds past --header-timeout a slow connection may take to be closed")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: never leave a server behind
    if args.classifier and not Path(args.classifier).exists():
        print(f"no classifier at {args.classifier}: classifications are replaced by completions", file=sys.stderr)
        args.classifier = ""
    results = []
    for i, batch in enumerate(args.batch_sizes):
        r = run_mode(args, batch, args.slow_headers if i == 0 else 0)
        results.append(r)
        print(f"max-batch-size {batch:>2}: {r['sent']} requests ({r['failed']} failed) in {r['wall_s']:.1f} s, "
              f"{r['requests_per_s']:.1f} req/s, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
              f"{r['generated_tokens_per_s']:.0f} generated tok/s, mean batch {r['mean_batch_rows']:.1f} rows, "
              f"RSS {r['rss_ready_mb']:.0f} -> {r['rss_after_warmup_mb']:.0f} -> {r['rss_end_mb']:.0f} MB "
              f"({r['rss_growth_pct']:+.1f}% after warmup)", flush=True)
        if "slow_headers" in r:
            sh = r["slow_headers"]
            print(f"  slow headers: {sh['opened']} connections opened, {sh['closed_in_time']} closed within "
                  f"{sh['header_timeout_s']:g} s + {args.slack:g} s, {sh['closed_late']} later, {sh['still_open']} "
                  f"still open; closed after {sh['earliest_close_s']:.1f}-{sh['latest_close_s']:.1f} s", flush=True)
        for f in r["failures"]:
            print(f"  failed: {f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    slow_ok = all(r["slow_headers"]["closed_in_time"] == r["slow_headers"]["opened"] == args.slow_headers
                  for r in results if "slow_headers" in r)
    return 1 if any(r["failed"] for r in results) or not slow_ok else 0


if __name__ == "__main__":
    sys.exit(main())
