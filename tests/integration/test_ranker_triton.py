"""The served ``ranker`` through a real tritonserver returns the in-process scores.

Uses the main stack's Triton when it serves ``ranker``; otherwise starts its own server on
ports 18100-18102 over a temporary repository holding only ``ranker`` (large files symlinked).
The in-process reference runs in the model environment (``python -m workers.model.check score``).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from stream.features import N_FEATURES
from stream.settings import ROOT, Settings, load_settings
from workers.model.runner import model_env_vars, model_python
from workers.stack import triton

RANKER = ROOT / "model_repo" / "ranker"
VERSION = "1"
NEEDED = ("model.py", "head.json", "encoder.int8.onnx", "tokenizer.json")


def _model_ready(settings: Settings, model: str) -> bool:
    url = f"http://{settings.triton_http_url}/v2/models/{model}/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _serves_this_contract(settings: Settings) -> bool:
    """The stack's ``ranker`` was loaded with this checkout's feature width (not an older build)."""
    inputs: list[dict[str, Any]] = list(triton.model_config(settings, "ranker").get("input", []))  # type: ignore[call-overload]
    widths = [int(i["dims"][0]) for i in inputs if i.get("name") == "FEATURES"]
    return widths == [N_FEATURES]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    missing = [n for n in NEEDED if not (RANKER / VERSION / n).exists()]
    if missing:
        pytest.skip(f"ranker not built ({missing}): run python -m workers.model.build")
    main = load_settings()
    if triton.ready(main) and _model_ready(main, "ranker") and _serves_this_contract(main):
        yield main
        return
    repo = tmp_path_factory.mktemp("ranker-repo")
    (repo / "ranker" / VERSION).mkdir(parents=True)
    shutil.copy(RANKER / "config.pbtxt", repo / "ranker" / "config.pbtxt")
    for f in (RANKER / VERSION).iterdir():
        if f.is_file():
            (repo / "ranker" / VERSION / f.name).symlink_to(f)
    settings = Settings(
        triton_http_port=18100,
        triton_grpc_port=18101,
        triton_metrics_port=18102,
        model_repo=repo,
        run_dir=repo / "run",
    )
    log = (repo / "triton.log").open("wb")
    proc = subprocess.Popen(triton.command(settings), env=triton.server_env(settings), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not triton.ready(settings):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "own tritonserver did not become ready:\n" + (repo / "triton.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield settings
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    genres = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance", "Thriller"]
    query = f"watched: Movie {seed} (1995); Star Wars (1977) | likes: {', '.join(rng.sample(genres, 2))}"
    return [
        {
            "query": query,
            "item": f"Movie {rng.randint(1, 30)} (19{rng.randint(70, 99)}). {', '.join(rng.sample(genres, 2))}.",
            "features": [round(rng.random(), 4) for _ in range(N_FEATURES)],
        }
        for _ in range(n)
    ]


def reference(batch: list[dict]) -> np.ndarray:
    out = subprocess.run(
        [str(model_python()), "-m", "workers.model.check", "score", "--version", VERSION],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        env=model_env_vars(),
        cwd=ROOT,
        check=True,
        timeout=240,
    )
    return np.asarray(json.loads(out.stdout.strip().splitlines()[-1]), dtype=np.float32)


def inputs(batch: list[dict[str, Any]], module: Any = grpcclient) -> list[Any]:
    q = np.array([[r["query"].encode()] for r in batch], dtype=object)
    i = np.array([[r["item"].encode()] for r in batch], dtype=object)
    f = np.asarray([r["features"] for r in batch], dtype=np.float32)
    out = [module.InferInput("QUERY", q.shape, "BYTES"), module.InferInput("ITEM", i.shape, "BYTES")]
    out.append(module.InferInput("FEATURES", f.shape, "FP32"))
    for tensor, value in zip(out, (q, i, f), strict=True):
        tensor.set_data_from_numpy(value)
    return out


def test_served_scores_equal_in_process(server: Settings) -> None:
    batch = rows(50, seed=1)  # one query's 50 candidates, repeated item texts included
    expected = reference(batch)
    with grpcclient.InferenceServerClient(server.triton_grpc_url) as client:
        first = client.infer("ranker", inputs(batch), client_timeout=60).as_numpy("SCORE")
        again = client.infer("ranker", inputs(batch), client_timeout=60).as_numpy("SCORE")  # cached items
    assert first.shape == (50, 1)
    np.testing.assert_allclose(first.reshape(-1), expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(again, first, atol=1e-6)


async def test_concurrent_requests_are_answered_separately(server: Settings) -> None:
    batches = [rows(n, seed=10 + k) for k, n in enumerate((50, 7, 33, 1))]
    expected = reference([r for b in batches for r in b])
    async with aioclient.InferenceServerClient(server.triton_grpc_url) as client:
        results = await asyncio.gather(
            *(client.infer("ranker", inputs(b, aioclient), client_timeout=60) for b in batches)
        )
    got = np.concatenate([r.as_numpy("SCORE").reshape(-1) for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_a_malformed_request_gets_an_error(server: Settings) -> None:
    batch = rows(3, seed=5)
    bad = inputs(batch)
    bad[2].set_data_from_numpy(np.full((3, N_FEATURES), np.nan, dtype=np.float32))
    with (
        grpcclient.InferenceServerClient(server.triton_grpc_url) as client,
        pytest.raises(Exception, match="NaN"),
    ):
        client.infer("ranker", bad, client_timeout=60)
