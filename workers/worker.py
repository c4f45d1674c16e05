"""``streamrec worker``: one Faust worker in the foreground against the configured broker and Triton."""

from __future__ import annotations

import asyncio
import gc
import os
import sys

from stream.settings import Settings
from workers.kafka_clients import ensure_topics

# Faust's names for the levels in stream.settings.
FAUST_LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}


def single_threaded_blas() -> None:
    """Keep numpy's OpenBLAS to the calling thread; must run before numpy is first imported.

    OpenBLAS starts a thread per core at import, and after each call they spin-wait for the next.
    The worker's BLAS calls are small (one query against the catalog's vectors) and come every few
    milliseconds, so on two cores the spinning thread held a whole core: 21 of the worker's 33 s of
    CPU in a 30 s window at 20 q/s, which Triton and Kafka needed (docs/performance.md).
    An operator's own setting wins.
    """
    if "numpy" in sys.modules:
        raise RuntimeError("numpy was imported before the BLAS thread limit could be set")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def tune_gc(gen0_threshold: int) -> None:
    """Freeze what startup built and collect the young generation less often.

    Objects alive now (the modules, the app, the item view preloaded from its changelogs) move to
    the permanent generation, so full collections stop walking them; and a young generation of
    ``gen0_threshold`` objects instead of 700 means full collections come ~30x less often. Measured
    while ingesting 30,000 events: 52 full collections took 2.7 s with the freeze alone, 15 took
    0.4 s with both, against ~7 s with neither.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def run_worker(settings: Settings) -> None:
    single_threaded_blas()
    asyncio.run(ensure_topics(settings))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from stream.app import app  # imported late: building the app reads settings and opens no sockets
    from stream.runtime import follower

    # The item view first, so that the first events after a restart see the whole catalog.
    asyncio.run(follower.preload())
    tune_gc(settings.gc_gen0_threshold)

    # No "-L uvloop": Faust reads it when faust is imported, long before this, so it never applied.
    # uvloop for real showed no speed-up here, so it stays out (docs/performance.md, sixth session).
    sys.argv = [
        "streamrec-worker",
        "worker",
        "--loglevel",
        FAUST_LOG_LEVELS[settings.log_level],
        "--web-bind",
        settings.web_host,
        "--web-host",
        settings.web_host,
        "--web-port",
        str(settings.web_port),
    ]
    app.main()
