"""``streamrec worker``: one Faust worker in the foreground against the configured broker and Triton."""

from __future__ import annotations

import asyncio
import os
import sys

from stream.settings import Settings
from workers.kafka_clients import ensure_topics

# Faust's names for the levels in stream.settings.
FAUST_LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}


def run_worker(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from stream.app import app  # imported late: building the app reads settings and opens no sockets
    from stream.runtime import follower

    # The item view first, so that the first events after a restart see the whole catalog.
    asyncio.run(follower.preload())

    sys.argv = [
        "streamrec-worker",
        "-L",
        "uvloop",
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
