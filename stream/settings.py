"""The one frozen settings object, read from the environment (prefix ``STREAMREC_``) at the edge."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stream.experiment import DEFAULT_VARIANTS, FALLBACK_RANKER, Variant, parse_variants

ROOT = Path(__file__).resolve().parent.parent
Port = Annotated[int, Field(ge=1, le=65535)]

# deploy/bootstrap.sh writes where it installed the model env, the Kafka jars and the data.
_PATHS_FILE = ROOT / ".venv" / "streamrec-paths.env"


class SettingsError(ValueError):
    """Raised with a readable message when the environment holds an invalid setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_",
        env_file=_PATHS_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka ---
    kafka_host: str = "127.0.0.1"
    kafka_port: Port = 19092
    kafka_controller_port: Port = 19093
    kafka_heap_mb: int = Field(default=512, ge=128, le=16384)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topic_partitions: int = Field(default=4, ge=1, le=256)
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)

    # --- Triton ---
    triton_host: str = "127.0.0.1"
    triton_http_port: Port = 18000
    triton_grpc_port: Port = 18001
    triton_metrics_port: Port = 18002
    triton_ready_timeout_s: float = Field(default=180.0, gt=0)

    # --- worker ---
    app_id: str = Field(default="streamrec", pattern=r"^[A-Za-z0-9._-]+$")
    store_url: Literal["rocksdb://", "memory://"] = "rocksdb://"
    worker_instance_id: str = Field(default="worker-0", pattern=r"^[A-Za-z0-9._-]+$")
    # Set by a supervising process (tests, benchmarks) to its pid: the worker stops once that process
    # is gone, instead of running on as an orphan (one ate a third of a core for 2 h).
    exit_with_parent_pid: int | None = Field(default=None, ge=1)
    web_host: str = "127.0.0.1"
    web_port: Port = 6066
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    broker_session_timeout_s: float = Field(default=10.0, gt=0, le=300)
    broker_request_timeout_s: float = Field(default=40.0, gt=0, le=600)
    broker_commit_interval_s: float = Field(default=2.0, gt=0, le=60)
    stream_buffer_maxsize: int = Field(default=4096, ge=16)
    # Per table partition (RocksDB): Faust's defaults (64 MiB x 3 write buffers, a 2 GiB block
    # cache, each per partition) let a 30-minute soak grow the worker by 600 MB (docs/reliability.md).
    rocksdb_write_buffer_mb: int = Field(default=4, ge=1, le=256)
    rocksdb_block_cache_mb: int = Field(default=8, ge=1, le=4096)
    # Python's collector: with its default (700 allocations) a full collection walked the item view
    # and tables every ~40 ms while ingesting, ~25% of the worker's time (docs/performance.md).
    gc_gen0_threshold: int = Field(default=20_000, ge=700, le=1_000_000)
    # A batch leaves when it holds *_max events or *_within_s after its first event (stream/batching.py).
    # Faust's own windows were ticks: a query waited 0-10 ms for the next one (5 ms on average); a
    # 5 ms window from the query's arrival keeps that mean and caps the wait at 5 ms.
    ingest_batch_max: int = Field(default=1000, ge=1)
    ingest_batch_within_s: float = Field(default=0.05, gt=0, le=10)
    query_batch_max: int = Field(default=32, ge=1, le=256)
    query_concurrency: int = Field(default=4, ge=1, le=64)
    query_batch_within_s: float = Field(default=0.005, gt=0, le=10)
    # Item statistics are written this long after their first change since their last write, oldest
    # first: up to item_stats_writes_per_batch of those due at a time, past that half of them (a
    # backlog is spread over the batches), and at once past item_stats_pending_max pending items,
    # which bounds their memory (stream/writebehind.py).
    item_stats_write_delay_s: float = Field(default=2.0, ge=0, le=60)
    item_stats_writes_per_batch: int = Field(default=128, ge=1)
    item_stats_pending_max: int = Field(default=20_000, ge=0)

    # --- recommendations ---
    candidates_max: int = Field(default=50, ge=1, le=500)
    k_default: int = Field(default=10, ge=1, le=100)
    trending_window_s: float = Field(default=6 * 3600.0, gt=0)
    refresh_on_event: bool = False
    refresh_debounce_s: float = Field(default=30.0, ge=0)

    # --- ranker (Triton) ---
    ranker_model: str = Field(default="ranker", pattern=r"^[A-Za-z0-9_.-]+$")
    encoder_model: str = Field(default="encoder", pattern=r"^[A-Za-z0-9_.-]+$")
    ranker_deadline_ms: float = Field(default=250.0, gt=0, le=60_000)
    embed_deadline_s: float = Field(default=30.0, gt=0, le=600)
    prime_ranker_cache: bool = True
    ranker_max_rows: int = Field(default=256, ge=1, le=4096)
    ranker_concurrency: int = Field(default=4, ge=1, le=64)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window: int = Field(default=20, ge=1)
    breaker_open_s: float = Field(default=2.0, gt=0)  # a probe every 2 s: ranking is back soon after Triton

    # --- experiments, diversity, exploration (stream/experiment.py; defaults keep one ranked list) ---
    experiment_salt: str = Field(default="streamrec-ab-1", min_length=1, max_length=64)
    # JSON, e.g. {"control": 0.5, "treatment": {"share": 0.5, "mmr_lambda": 0.7}}; empty = all control.
    variants: Annotated[tuple[Variant, ...], NoDecode] = DEFAULT_VARIANTS
    mmr_lambda: float = Field(default=1.0, ge=0.0, le=1.0)  # 1.0 = pure relevance (no MMR)
    explore_epsilon: float = Field(default=0.0, ge=0.0, le=1.0)  # 0.0 = no exploration
    explore_slots: int = Field(default=1, ge=1, le=10)  # how many of the last top-k slots may explore

    # The learning loop (docs/learning-loop.md).
    impressions_enabled: bool = True
    feedback_window_s: float = Field(default=1800.0, gt=0)  # outcomes count this long after an impression
    feedback_grace_s: float = Field(default=60.0, ge=0)  # allowed lateness before a window closes
    feedback_max_open: int = Field(default=50, ge=1, le=1000)  # open impressions kept per user
    feedback_sweep_s: float = Field(default=5.0, gt=0)  # how often idle users' windows are closed

    # --- paths ---
    cache_dir: Path = Path.home() / ".cache" / "streamrec"
    run_dir: Path = ROOT / ".run"
    model_repo: Path = ROOT / "model_repo"
    model_env: Path | None = None
    triton_backends: Path | None = None
    kafka_home: Path | None = None
    data_dir: Path | None = None

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def triton_http_url(self) -> str:
        return f"{self.triton_host}:{self.triton_http_port}"

    @property
    def triton_metrics_url(self) -> str:
        return f"{self.triton_host}:{self.triton_metrics_port}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @field_validator("variants", mode="before")
    @classmethod
    def _parse_variants(cls, value: object) -> tuple[Variant, ...]:
        if value is None or isinstance(value, str | Mapping | tuple):
            return parse_variants(value)
        raise ValueError(f"expected a JSON object of variants, got {type(value).__name__}")

    @model_validator(mode="after")
    def _variants_routable(self) -> Settings:
        # An arm routes to a version of the configured ranker (stream/registry.py) or to the fallback
        # blend; a second ranker model would need its own client and breaker.
        for v in self.variants:
            if v.arm.ranker not in (None, self.ranker_model, FALLBACK_RANKER):
                raise ValueError(
                    f"STREAMREC_VARIANTS: variant {v.name!r} asks for ranker {v.arm.ranker!r}; only "
                    f"STREAMREC_RANKER_MODEL ({self.ranker_model!r}) or {FALLBACK_RANKER!r} can be served"
                )
        return self

    @model_validator(mode="after")
    def _ports_distinct(self) -> Settings:
        ports = {
            "kafka_port": self.kafka_port,
            "kafka_controller_port": self.kafka_controller_port,
            "triton_http_port": self.triton_http_port,
            "triton_grpc_port": self.triton_grpc_port,
            "triton_metrics_port": self.triton_metrics_port,
            "web_port": self.web_port,
        }
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(
                    f"STREAMREC_{name.upper()} and STREAMREC_{seen[port].upper()} both use port {port}; "
                    "each needs its own"
                )
            seen[port] = name
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "STREAMREC_KAFKA_SECURITY_PROTOCOL uses SASL but STREAMREC_KAFKA_SASL_USERNAME / "
                "STREAMREC_KAFKA_SASL_PASSWORD are not set"
            )
        return self


_SECRET_FIELDS = frozenset({"kafka_sasl_password"})


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if err["loc"]:
                name = ".".join(str(p) for p in err["loc"])
                secret = name in _SECRET_FIELDS
                shown = "***" if secret else repr(err.get("input"))
                lines.append(f"  STREAMREC_{name.upper()}: {err['msg']} (got {shown})")
            else:
                # Model-level checks name their variables in the message; the input (every
                # setting, secrets included) is never echoed.
                lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid streamrec settings:\n" + "\n".join(lines)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
