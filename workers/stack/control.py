"""Bring the whole local stack up or down and report its state."""

from __future__ import annotations

from dataclasses import dataclass

from stream.settings import Settings
from workers.stack import kafka, triton


@dataclass(frozen=True)
class StackStatus:
    kafka_up: bool
    triton_up: bool

    @property
    def all_up(self) -> bool:
        return self.kafka_up and self.triton_up


def status(settings: Settings) -> StackStatus:
    return StackStatus(kafka_up=kafka.is_up(settings), triton_up=triton.is_up(settings))


def status_json(settings: Settings, state: StackStatus) -> dict[str, dict[str, object]]:
    return {
        "kafka": {"up": state.kafka_up, "bootstrap": settings.kafka_bootstrap},
        "triton": {
            "up": state.triton_up,
            "grpc": settings.triton_grpc_url,
            "http": settings.triton_http_url,
            "metrics": settings.triton_metrics_url,
        },
    }


def up(settings: Settings) -> dict[str, float]:
    """Start both servers (idempotent); returns seconds each took to become ready."""
    timings = {"kafka": kafka.start(settings)}
    timings["triton"] = triton.start(settings)
    return timings


def down(settings: Settings) -> None:
    triton.stop(settings)
    kafka.stop(settings)
