"""The Triton client, owned by one service: opened on start, closed on stop, a deadline on every call.

Failures and timeouts trip a circuit breaker; callers then use the fallback ranking. Nothing here
blocks the event loop: ``tritonclient.grpc.aio`` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from stream.breaker import BreakerState, CircuitBreaker, Permit
from stream.features import N_FEATURES
from stream.metrics import Metrics
from stream.settings import Settings

log = logging.getLogger(__name__)

# A call refused before Triton looked at it (server restarting, connection reset) is retried after
# a pause that doubles each time, but only while the deadline leaves room for the pause and for a
# call: a retry never makes the fallback late. Errors from the model itself are not retried.
RETRY_ATTEMPTS = 3
RETRY_BACKOFF_S = 0.005
MIN_ATTEMPT_S = 0.005
TRANSIENT_STATUSES = frozenset({"StatusCode.UNAVAILABLE"})


def breaker_key(model: str, version: str) -> str:
    """The breaker (and its ``model`` metric label) of a call: versions are few, so labels stay bounded."""
    return f"{model}:{version}" if version else model


class RankerUnavailable(RuntimeError):
    """Triton could not answer within the deadline (or the breaker is open); ``cause`` is a short label."""

    def __init__(self, cause: str, detail: str = "", transient: bool = False) -> None:
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.transient = transient


@dataclass(frozen=True)
class RankRequest:
    query_text: str
    item_texts: Sequence[str]
    features: np.ndarray  # (len(item_texts), N_FEATURES) float32


# tritonclient's own channel options, plus a short reconnect backoff: gRPC's default grows to 120 s
# while Triton is away, so a restarted Triton would wait that long for its first request (the
# chaos suite's "ranking back < 5 s after Triton returns").
CHANNEL_ARGS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", KeepAliveOptions().keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", KeepAliveOptions().keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", KeepAliveOptions().keepalive_permit_without_calls),
    ("grpc.http2.max_pings_without_data", KeepAliveOptions().http2_max_pings_without_data),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def connect_triton(url: str) -> Any:
    return grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS)


@dataclass(frozen=True)
class RankResult:
    scores: list[np.ndarray]
    model_version: str


class RankerClient:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        connect: Callable[[str], Any] = connect_triton,
    ) -> None:
        """``connect(url)`` makes the ``tritonclient.grpc.aio`` client (tests pass a fake transport)."""
        self.settings = settings
        self.metrics = metrics
        self._connect = connect
        # One breaker per model, and per explicitly requested version: a broken ranker must not stop
        # catalog embeddings, and a missing version 2 (an A/B arm) must not stop version 1's arm.
        self.breakers: dict[str, CircuitBreaker] = {}
        for model in (settings.ranker_model, settings.encoder_model):
            self._breaker(model)
        self._client: Any = None
        # Breakers that failed on something other than a deadline since they last closed: only such a
        # failure says Triton may have restarted (cold caches). A server that was merely slow keeps its
        # caches, and re-priming the whole catalog after every overload made the overload worse.
        self.recoveries = 0
        self._maybe_cold: set[str] = set()
        self._slots = asyncio.Semaphore(settings.ranker_concurrency)

    async def __aenter__(self) -> RankerClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._client is None:
            self._client = self._connect(self.settings.triton_grpc_url)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def ready(self, timeout_s: float = 1.0) -> bool:
        if self._client is None:
            return False
        try:
            return bool(
                await asyncio.wait_for(self._client.is_model_ready(self.settings.ranker_model), timeout_s)
            )
        except (InferenceServerException, TimeoutError, OSError):
            return False

    # --- calls -------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], deadline: float) -> np.ndarray:
        """Sentence embeddings for ``texts`` from the encoder model; ``deadline`` is a monotonic time."""
        array = np.array([[t.encode("utf-8")] for t in texts], dtype=object)
        inp = grpcclient.InferInput("TEXT", list(array.shape), "BYTES")
        inp.set_data_from_numpy(array)
        result, _ = await self._infer(self.settings.encoder_model, [inp], "EMBEDDING", deadline)
        return result

    async def rank(self, requests: Sequence[RankRequest], deadline: float, version: str = "") -> RankResult:
        """Scores for each request's rows; requests are packed into Triton calls of bounded size.

        ``version`` is the ranker version to ask for ("" = the one Triton's config serves)."""
        rows_q: list[str] = []
        rows_i: list[str] = []
        feats: list[np.ndarray] = []
        sizes = []
        for req in requests:
            n = len(req.item_texts)
            rows_q.extend([req.query_text] * n)
            rows_i.extend(req.item_texts)
            feats.append(np.asarray(req.features, dtype=np.float32).reshape(n, N_FEATURES))
            sizes.append(n)
        if not rows_q:  # nothing to score (e.g. an empty catalog): no call, no version
            return RankResult([np.zeros(0, np.float32) for _ in requests], "")
        features = np.concatenate(feats)
        chunk = self.settings.ranker_max_rows
        calls = [
            self._rank_rows(
                rows_q[s : s + chunk], rows_i[s : s + chunk], features[s : s + chunk], deadline, version
            )
            for s in range(0, len(rows_q), chunk)
        ]
        results = await asyncio.gather(*calls)
        scores = np.concatenate([r[0] for r in results]).reshape(-1)
        version = results[-1][1]
        out, start = [], 0
        for n in sizes:
            out.append(scores[start : start + n])
            start += n
        return RankResult(out, version)

    async def _rank_rows(
        self, queries: list[str], items: list[str], features: np.ndarray, deadline: float, version: str = ""
    ) -> tuple[np.ndarray, str]:
        q = np.array([[t.encode("utf-8")] for t in queries], dtype=object)
        i = np.array([[t.encode("utf-8")] for t in items], dtype=object)
        inputs = [
            grpcclient.InferInput("QUERY", list(q.shape), "BYTES"),
            grpcclient.InferInput("ITEM", list(i.shape), "BYTES"),
            grpcclient.InferInput("FEATURES", list(features.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(q)
        inputs[1].set_data_from_numpy(i)
        inputs[2].set_data_from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.metrics.ranker_batch.observe(len(queries))
        return await self._infer(self.settings.ranker_model, inputs, "SCORE", deadline, version)

    async def _infer(
        self, model: str, inputs: list[grpcclient.InferInput], output: str, deadline: float, version: str = ""
    ) -> tuple[np.ndarray, str]:
        backoff = RETRY_BACKOFF_S
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await self._attempt(model, inputs, output, deadline, version)
            except RankerUnavailable as exc:
                room = deadline - time.monotonic() - backoff
                if not exc.transient or attempt == RETRY_ATTEMPTS or room < MIN_ATTEMPT_S:
                    raise
                log.debug("%s call refused (%s); retrying in %.0f ms", model, exc, backoff * 1000)
            await asyncio.sleep(backoff)
            backoff *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self, model: str, inputs: list[grpcclient.InferInput], output: str, deadline: float, version: str
    ) -> tuple[np.ndarray, str]:
        if self._client is None:
            raise RankerUnavailable("not_started")
        key = breaker_key(model, version)
        breaker = self._breaker(key)
        started = time.monotonic()
        remaining = deadline - started
        if remaining <= 0.001:
            raise RankerUnavailable("deadline", "no time left before the call")
        permit = breaker.acquire()
        if permit is None:
            self._publish_breaker(key)
            raise RankerUnavailable("breaker_open")
        outcome: bool | None = None
        try:
            async with asyncio.timeout(remaining):
                async with self._slots:
                    left = max(deadline - time.monotonic(), 0.001)
                    result = await self._client.infer(
                        model,
                        inputs,
                        model_version=version,
                        outputs=[grpcclient.InferRequestedOutput(output)],
                        client_timeout=left,
                    )
            outcome = True
        except TimeoutError:
            outcome = False
            raise RankerUnavailable("deadline", f"{model} exceeded {remaining * 1000:.0f} ms") from None
        except InferenceServerException as exc:
            outcome = False
            cause = "deadline" if "Deadline" in str(exc) else "triton_error"
            if cause != "deadline":
                self._maybe_cold.add(key)
            transient = exc.status() in TRANSIENT_STATUSES
            raise RankerUnavailable(cause, str(exc)[:200], transient=transient) from None
        except OSError as exc:
            outcome = False
            self._maybe_cold.add(key)
            raise RankerUnavailable("connection", str(exc)[:200], transient=True) from None
        finally:
            if outcome is None:  # cancelled or an unexpected error: the call proved nothing
                breaker.release(permit)
            else:
                self._record(key, outcome, permit)
        if model == self.settings.ranker_model:
            self.metrics.ranker_latency.observe(time.monotonic() - started)
        array = result.as_numpy(output)
        if array is None:
            raise RankerUnavailable("triton_error", f"{model} returned no {output}")
        return array, str(result.get_response().model_version)

    def _record(self, model: str, ok: bool, permit: Permit) -> None:
        breaker = self.breakers[model]
        was_open = breaker.state is not BreakerState.CLOSED
        breaker.record(ok, permit)
        if ok and breaker.state is BreakerState.CLOSED:
            if was_open and model in self._maybe_cold:
                self.recoveries += 1  # Triton may have restarted with cold caches
            self._maybe_cold.discard(model)
        self._publish_breaker(model)

    def _breaker(self, key: str) -> CircuitBreaker:
        found = self.breakers.get(key)
        if found is None:
            found = self.breakers[key] = CircuitBreaker(
                failure_rate=self.settings.breaker_failure_rate,
                window=self.settings.breaker_window,
                open_s=self.settings.breaker_open_s,
            )
        return found

    def _publish_breaker(self, model: str) -> None:
        self.metrics.breaker_state.labels(model=model).set(int(self.breakers[model].state))

    def breaker_state(self, model: str | None = None, version: str = "") -> BreakerState:
        return self._breaker(breaker_key(model or self.settings.ranker_model, version)).state
