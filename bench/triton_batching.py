"""Measures the served ``ranker`` under concurrent load at several ``max_queue_delay_microseconds``.

    .venv/bin/python bench/triton_batching.py [--delays 0,500,2000,5000] [--clients 8] [--rows 50]
        [--seconds 20] [--port 18200]

Starts its own tritonserver (ports PORT..PORT+2) over a temporary repository holding only
``model_repo/ranker`` (large files symlinked), then for each delay reloads ``ranker`` with that
``dynamic_batching.max_queue_delay_microseconds`` (repository API config override), warms the item
cache with the item pool, and runs CLIENTS concurrent gRPC clients, each sending ROWS-row requests
back to back for SECONDS. Items come from a fixed pool of MovieLens item texts (cached after the
warm-up, as in serving); every request carries a new user text, so each costs one query forward -
the steady state of the live pipeline. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as aioclient

from stream.features import N_FEATURES
from stream.settings import ROOT, Settings
from stream.text import item_text, user_text
from workers.movielens import load_items
from workers.stack import triton

RANKER = ROOT / "model_repo" / "ranker"
GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance", "Thriller", "Animation", "Horror"]


def start_server(repo: Path, port: int) -> tuple[subprocess.Popen[bytes], Settings]:
    (repo / "ranker" / "1").mkdir(parents=True)
    shutil.copy(RANKER / "config.pbtxt", repo / "ranker" / "config.pbtxt")
    for f in (RANKER / "1").iterdir():
        if f.is_file():
            (repo / "ranker" / "1" / f.name).symlink_to(f)
    settings = Settings(
        triton_http_port=port,
        triton_grpc_port=port + 1,
        triton_metrics_port=port + 2,
        model_repo=repo,
        run_dir=repo / "run",
    )
    log = (repo / "triton.log").open("wb")
    proc = subprocess.Popen(triton.command(settings), env=triton.server_env(settings), stdout=log, stderr=log)
    deadline = time.monotonic() + 180
    while not triton.ready(settings):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("tritonserver did not start:\n" + (repo / "triton.log").read_text()[-3000:])
        time.sleep(0.5)
    return proc, settings


def config_json(settings: Settings) -> dict[str, Any]:
    url = f"http://{settings.triton_http_url}/v2/models/ranker/config"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


class Load:
    def __init__(self, items: list[str], titles: list[str], rows: int, seed: int) -> None:
        self.items, self.titles, self.rows = items, titles, rows
        self.rng = random.Random(seed)

    def query(self) -> str:
        return user_text("", self.rng.sample(self.titles, 5), self.rng.sample(GENRES, 3))

    def inputs(self, query: str, items: list[str]) -> list[aioclient.InferInput]:
        q = np.array([[query.encode()]] * len(items), dtype=object)
        i = np.array([[t.encode()] for t in items], dtype=object)
        f = np.asarray([[self.rng.random() for _ in range(N_FEATURES)] for _ in items], dtype=np.float32)
        out = []
        for name, value, dtype in (("QUERY", q, "BYTES"), ("ITEM", i, "BYTES"), ("FEATURES", f, "FP32")):
            tensor = aioclient.InferInput(name, list(value.shape), dtype)
            tensor.set_data_from_numpy(value)
            out.append(tensor)
        return out


async def stats(client: aioclient.InferenceServerClient) -> tuple[int, int, int]:
    """(requests answered, rows inferred, model executions) so far."""
    body = await client.get_inference_statistics("ranker", as_json=True)
    s = body["model_stats"][0]
    requests = int(s["inference_stats"]["success"].get("count", 0))
    return requests, int(s.get("inference_count", 0)), int(s.get("execution_count", 0))


async def measure(
    settings: Settings, base: dict[str, Any], delay: int, load: Load, clients: int, seconds: float
) -> dict[str, Any]:
    url = settings.triton_grpc_url
    async with aioclient.InferenceServerClient(url) as admin:
        cfg = json.loads(json.dumps(base))
        cfg.setdefault("dynamic_batching", {})["max_queue_delay_microseconds"] = delay
        await admin.load_model("ranker", config=json.dumps(cfg))
        for start in range(0, len(load.items), load.rows):  # warm the item cache (one client)
            await admin.infer("ranker", load.inputs(load.query(), load.items[start : start + load.rows]))
        served = await admin.get_model_config("ranker", as_json=True)
        applied = int(served["config"]["dynamic_batching"].get("max_queue_delay_microseconds", 0))
        assert applied == delay, (applied, delay)
        req0, rows0, exec0 = await stats(admin)
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds

        async def client_loop() -> None:
            nonlocal errors
            async with aioclient.InferenceServerClient(url) as client:
                while time.perf_counter() < stop:
                    inputs = load.inputs(load.query(), load.rng.sample(load.items, load.rows))
                    t0 = time.perf_counter()
                    try:
                        await client.infer("ranker", inputs, client_timeout=30)
                        latencies.append(time.perf_counter() - t0)
                    except Exception:
                        errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        req1, rows1, exec1 = await stats(admin)
    lat = np.asarray(latencies) * 1000
    return {
        "delay_us": delay,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": round(len(latencies) / elapsed, 2),
        "rows_per_s": round(len(latencies) * load.rows / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "requests_per_execution": round((req1 - req0) / max(exec1 - exec0, 1), 2),
        "rows_per_execution": round((rows1 - rows0) / max(exec1 - exec0, 1), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/triton_batching.py")
    parser.add_argument(
        "--delays", default="0,500,2000,5000,0,2000", help="repeats show drift from other load"
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--items", type=int, default=300, help="size of the (cached) item pool")
    parser.add_argument("--port", type=int, default=18200)
    args = parser.parse_args()
    delays = [int(d) for d in args.delays.split(",")]
    catalog = load_items()
    pool = random.Random(0).sample(sorted(catalog), args.items)
    load = Load(
        [item_text(catalog[i]) for i in pool], [catalog[i].title for i in sorted(catalog)], args.rows, 0
    )
    with tempfile.TemporaryDirectory(prefix="triton-batching-") as tmp:
        proc, settings = start_server(Path(tmp), args.port)
        try:
            base = config_json(settings)
            results = []
            for delay in delays:
                results.append(asyncio.run(measure(settings, base, delay, load, args.clients, args.seconds)))
                r = results[-1]
                print(
                    f"delay {r['delay_us']:>5} us  {r['req_per_s']:6.2f} req/s  {r['rows_per_s']:7.1f} rows/s  "
                    f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  requests/execution "
                    f"{r['requests_per_execution']}  errors {r['errors']}",
                    flush=True,
                )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} cpus={len(os.sched_getaffinity(0))}",
                "clients": args.clients,
                "rows": args.rows,
                "seconds": args.seconds,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
