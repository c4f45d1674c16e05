"""A single-node Apache Kafka broker in KRaft mode (combined broker + controller) on loopback."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from stream.settings import ROOT, Settings
from workers.stack.process import ManagedProcess, StackError, port_open

LOG4J_CONFIG = ROOT / "deploy" / "kafka" / "log4j2.properties"


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess("kafka", settings.run_dir)


def server_properties(settings: Settings, data_dir: Path, sasl_users: Mapping[str, str] | None = None) -> str:
    """The broker's configuration; with ``sasl_users`` (name -> password) its client listener
    speaks SASL_PLAINTEXT with the PLAIN mechanism and accepts only those users."""
    host = settings.kafka_host
    client = "SASL_PLAINTEXT" if sasl_users else "PLAINTEXT"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{settings.kafka_controller_port}",
            f"listeners={client}://{host}:{settings.kafka_port},CONTROLLER://{host}:{settings.kafka_controller_port}",
            f"advertised.listeners={client}://{host}:{settings.kafka_port}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={client}:{client},CONTROLLER:PLAINTEXT",
            f"inter.broker.listener.name={client}",
            *(_sasl_plain_properties(sasl_users) if sasl_users else []),
            f"log.dirs={data_dir}",
            f"num.partitions={settings.topic_partitions}",
            # Topics are created explicitly with the partition counts the tables expect.
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "log.segment.bytes=67108864",
            "",
        ]
    )


def _sasl_plain_properties(users: Mapping[str, str]) -> list[str]:
    """PLAIN on the client listener (JAAS in the server properties). The broker's own login, for
    inter-broker traffic on that listener, is a throwaway credential made here, never stored."""
    broker_password = secrets.token_hex(16)
    accounts = {"broker": broker_password, **users}
    for name, password in accounts.items():
        if not (name.isidentifier() and password.isprintable() and '"' not in password):
            raise StackError(
                f"SASL user {name!r}: names must be identifiers, passwords printable without quotes"
            )
    entries = " ".join(f'user_{name}="{password}"' for name, password in accounts.items())
    return [
        "sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config="
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="broker" password="{broker_password}" {entries};',
    ]


def _classpath(settings: Settings) -> str:
    if settings.kafka_home is None or not (settings.kafka_home / "libs").is_dir():
        raise StackError("Kafka jars not found: run deploy/bootstrap.sh (or set STREAMREC_KAFKA_HOME)")
    return str(settings.kafka_home / "libs" / "*")


def _java(settings: Settings, main: str, *args: str) -> list[str]:
    return [
        "java",
        f"-Xmx{settings.kafka_heap_mb}m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp",
        _classpath(settings),
        main,
        *args,
    ]


def _format_storage(settings: Settings, config: Path, data_dir: Path) -> None:
    if (data_dir / "meta.properties").exists():
        return
    # Kafka wants a random UUID as 22 characters of url-safe base64.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    result = subprocess.run(
        # "--cluster-id=<id>": an id starting with "-" (1 in 64) would otherwise read as an option.
        _java(settings, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")


def metadata_ok(settings: Settings, timeout_s: float = 3.0) -> bool:
    """True when the broker answers a metadata request (not merely an open port)."""
    if not port_open(settings.kafka_host, settings.kafka_port):
        return False

    async def probe() -> bool:
        from aiokafka import AIOKafkaClient

        from workers.kafka_clients import client_kwargs

        # With the settings' security (SASL/SSL), so that a secured broker is probed as clients see it.
        client = AIOKafkaClient(**client_kwargs(settings), request_timeout_ms=2000)
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            return bool(client.cluster.brokers())
        except Exception:
            return False
        finally:
            await client.close()

    return asyncio.run(probe())


def start(settings: Settings, sasl_users: Mapping[str, str] | None = None) -> float:
    """Start the broker (formatting storage on first use) and wait for metadata; returns seconds.

    ``sasl_users``: see ``server_properties``; the readiness probe then logs in with the settings'
    SASL credentials."""
    proc = process(settings)
    if proc.pid() is not None and metadata_ok(settings):
        return 0.0
    if port_open(settings.kafka_host, settings.kafka_port):
        raise StackError(f"port {settings.kafka_port} is taken by another process")
    data_dir = settings.run_dir / "kafka-data"
    config = settings.run_dir / "kafka.properties"
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(server_properties(settings, data_dir, sasl_users))
    _format_storage(settings, config, data_dir)
    proc.start(_java(settings, "kafka.Kafka", str(config)))
    return proc.wait_ready(lambda: metadata_ok(settings), timeout_s=90)


def stop(settings: Settings) -> bool:
    return process(settings).stop(timeout_s=30)


def is_up(settings: Settings) -> bool:
    return process(settings).pid() is not None and metadata_ok(settings)
