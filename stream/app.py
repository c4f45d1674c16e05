"""The one Faust application object; agents live in ``stream.agents`` and are discovered explicitly."""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import faust
from faust.types import TP

from stream.batching import Stream
from stream.commits import SafeTransport
from stream.settings import Settings, get_settings
from stream.writebehind import WriteBehind


def credentials(settings: Settings) -> Any:
    """SASL/SSL credentials for Faust from the settings (None for plaintext)."""
    context = (
        ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if "SSL" in settings.kafka_security_protocol
        else None
    )
    if settings.kafka_security_protocol.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


log = logging.getLogger(__name__)

# The exit status of a worker stopped by an agent's unexpected error (EX_SOFTWARE).
AGENT_CRASH_EXIT = 70


class App(faust.App):
    """The Faust app: commits that cover only finished work, an idempotent producer (outputs and
    changelogs) (stream.commits), commits held below table writes still pending (stream.writebehind),
    and a worker that stops rather than skip a batch an agent failed on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Table values folded and not yet written: commits stay below what changed them.
        self.write_behind: list[WriteBehind[Any]] = []

    def commit_floor(self, tp: TP) -> int | None:
        """The lowest offset of ``tp`` whose effects are not all written (stream.writebehind)."""
        floors = [f for pending in self.write_behind if (f := pending.floor(tp)) is not None]
        return min(floors, default=None)

    def _new_transport(self) -> Any:
        return SafeTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return SafeTransport(self.conf.broker_producer, self)

    async def _on_agent_error(self, agent: Any, exc: BaseException) -> None:
        """Faust commits on an agent's error and restarts it, and ``take_events`` acks the batch
        that raised once its generator is closed: the batch's events are silently lost (seen with
        a full disk: RocksDB ``put`` failing mid-batch). Exiting here, before anything else runs on
        the event loop, leaves their offsets uncommitted, so a restarted worker processes them."""
        exit_for_restart(f"agent {agent.name} crashed: {exc!r}")


def exit_for_restart(cause: str) -> None:
    """Stop the worker at once, before a commit can pass what it was doing (``AGENT_CRASH_EXIT``)."""
    log.critical(
        "%s; exiting with status %d so that its batch is processed again after a restart",
        cause,
        AGENT_CRASH_EXIT,
    )
    logging.shutdown()
    os._exit(AGENT_CRASH_EXIT)


class Worker(faust.Worker):
    """Faust's worker, with the root logger left at the configured level."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        # At WARN and above Faust adds its terminal spinner's handler and sets the root logger to
        # DEBUG for it, so every library's debug call built a record: aiokafka's fetcher logs one
        # per partition per fetch, 3.4% of py-spy's samples at 40 q/s (docs/performance.md).
        logger.setLevel(level)


def create_app(settings: Settings) -> App:
    datadir = settings.run_dir / "workers" / settings.worker_instance_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=credentials(settings),
        store=settings.store_url,
        datadir=str(datadir),
        autodiscover=["stream.agents"],
        Worker=Worker,
        Stream=Stream,
        origin="stream",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        topic_disable_leader=True,
        # A restarted worker takes over its own partitions at once instead of waiting for its dead self.
        consumer_group_instance_id=settings.worker_instance_id,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        broker_request_timeout=settings.broker_request_timeout_s,
        broker_commit_interval=settings.broker_commit_interval_s,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        key_serializer="raw",
        value_serializer="raw",
        table_cleanup_interval=30.0,
        stream_recovery_delay=0.0,
    )


settings = get_settings()
app = create_app(settings)
