"""A single-node Apache Kafka broker in KRaft mode (combined broker + controller) on loopback."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from pathlib import Path

from stream.settings import ROOT, Settings
from workers.stack.process import ManagedProcess, StackError, port_open

LOG4J_CONFIG = ROOT / "deploy" / "kafka" / "log4j2.properties"


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess("kafka", settings.run_dir)


def server_properties(settings: Settings, data_dir: Path) -> str:
    host = settings.kafka_host
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{settings.kafka_controller_port}",
            f"listeners=PLAINTEXT://{host}:{settings.kafka_port},CONTROLLER://{host}:{settings.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://{host}:{settings.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
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
        _java(settings, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
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

        client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=2000)
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            return bool(client.cluster.brokers())
        except Exception:
            return False
        finally:
            await client.close()

    return asyncio.run(probe())


def start(settings: Settings) -> float:
    """Start the broker (formatting storage on first use) and wait for metadata; returns seconds."""
    proc = process(settings)
    if proc.pid() is not None and metadata_ok(settings):
        return 0.0
    if port_open(settings.kafka_host, settings.kafka_port):
        raise StackError(f"port {settings.kafka_port} is taken by another process")
    data_dir = settings.run_dir / "kafka-data"
    config = settings.run_dir / "kafka.properties"
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    config.write_text(server_properties(settings, data_dir))
    _format_storage(settings, config, data_dir)
    proc.start(_java(settings, "kafka.Kafka", str(config)))
    return proc.wait_ready(lambda: metadata_ok(settings), timeout_s=90)


def stop(settings: Settings) -> bool:
    return process(settings).stop(timeout_s=30)


def is_up(settings: Settings) -> bool:
    return process(settings).pid() is not None and metadata_ok(settings)
