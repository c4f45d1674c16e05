"""The one frozen settings object: environment parsing and fail-fast validation with readable messages."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr, ValidationError

from stream.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STREAMREC_"):
            monkeypatch.delenv(key)


def load(**overrides: object) -> Settings:
    return load_settings(_env_file=None, **overrides)


def error_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load()
    message = str(info.value)
    assert message.startswith("invalid streamrec settings:")
    return message


def test_defaults_are_valid_and_derived_values_agree() -> None:
    s = load()
    assert s.kafka_bootstrap == f"{s.kafka_host}:{s.kafka_port}"
    assert s.triton_grpc_url == f"{s.triton_host}:{s.triton_grpc_port}"
    assert s.topic("events") == "events"
    assert s.store_url == "rocksdb://"


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_PORT", "29092")
    monkeypatch.setenv("STREAMREC_TOPIC_PREFIX", "dev.")
    monkeypatch.setenv("STREAMREC_LOG_LEVEL", "debug")
    monkeypatch.setenv("STREAMREC_REFRESH_ON_EVENT", "true")
    monkeypatch.setenv("KAFKA_PORT", "1")  # unprefixed: ignored
    s = load()
    assert s.kafka_port == 29092
    assert s.kafka_bootstrap == "127.0.0.1:29092"
    assert s.topic("events") == "dev.events"
    assert s.log_level == "debug"
    assert s.refresh_on_event is True


@pytest.mark.parametrize("value", ["0", "65536", "-1", "abc", "80.5"])
def test_bad_port_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    message = error_of(monkeypatch, STREAMREC_TRITON_GRPC_PORT=value)
    assert "STREAMREC_TRITON_GRPC_PORT" in message
    assert repr(value) in message


def test_all_errors_are_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, STREAMREC_KAFKA_PORT="abc", STREAMREC_LOG_LEVEL="verbose")
    assert "STREAMREC_KAFKA_PORT" in message
    assert "STREAMREC_LOG_LEVEL" in message
    assert "'debug', 'info', 'warning' or 'error'" in message
    assert "'verbose'" in message


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("STREAMREC_STORE_URL", "redis://"),
        ("STREAMREC_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("STREAMREC_TOPIC_PREFIX", "bad prefix!"),
        ("STREAMREC_QUERY_BATCH_MAX", "0"),
        ("STREAMREC_INGEST_BATCH_WITHIN_S", "0"),
        ("STREAMREC_BREAKER_FAILURE_RATE", "1.5"),
        ("STREAMREC_RANKER_MODEL", "../etc"),
    ],
)
def test_other_bad_values_name_their_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    assert var in error_of(monkeypatch, **{var: value})


def test_duplicate_ports_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, STREAMREC_WEB_PORT="19092")
    assert "both use port 19092" in message


def test_duplicate_ports_name_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, STREAMREC_WEB_PORT="19092")
    assert "STREAMREC_WEB_PORT" in message
    assert "STREAMREC_KAFKA_PORT" in message


def test_sasl_without_credentials_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(monkeypatch, STREAMREC_KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    assert "SASL" in message
    assert "STREAMREC_KAFKA_SASL_USERNAME" in message
    message = error_of(
        monkeypatch, STREAMREC_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", STREAMREC_KAFKA_SASL_USERNAME="bob"
    )
    assert "STREAMREC_KAFKA_SASL_PASSWORD" in message


def test_sasl_with_credentials_keeps_the_password_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_USERNAME", "bob")
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_PASSWORD", "hunter2")
    s = load()
    assert isinstance(s.kafka_sasl_password, SecretStr)
    assert s.kafka_sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())


def test_error_message_never_contains_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(
        monkeypatch,
        STREAMREC_KAFKA_SASL_USERNAME="bob",
        STREAMREC_KAFKA_SASL_PASSWORD="hunter2",
        STREAMREC_WEB_PORT="19092",  # an unrelated error
    )
    assert "hunter2" not in message


def test_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(ValidationError, match="frozen"):
        s.kafka_port = 1


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_K_DEFAULT", "5")
    assert load().k_default == 5
    assert load(k_default=7).k_default == 7
