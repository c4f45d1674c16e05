"""Kafka security settings reach both clients: the Faust app (broker_credentials, as its aiokafka driver
turns them into client arguments) and every aiokafka client built from ``client_kwargs``. No network."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from stream.app import create_app, credentials
from stream.settings import Settings, load_settings
from workers.kafka_clients import client_kwargs

AUTH_KEYS = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


@pytest.fixture(autouse=True)
def _no_streamrec_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STREAMREC_"):
            monkeypatch.delenv(key)


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(_env_file=None, run_dir=tmp_path, kafka_host="kafka.example", **overrides)


def _faust_auth(settings: Settings) -> dict[str, Any]:
    """The aiokafka arguments Faust's driver derives from the app built from ``settings``."""
    app = create_app(settings)
    return dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))


def test_sasl_plaintext_reaches_faust_and_aiokafka(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="recommender",
        kafka_sasl_password="s3cret",
    )
    creds = credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "recommender",
        "s3cret",
        "SCRAM-SHA-512",
    )
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None

    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "recommender",
        "sasl_plain_password": "s3cret",
    }
    assert _faust_auth(settings) == {**expected, "ssl_context": None}
    assert client_kwargs(settings) == {"bootstrap_servers": "kafka.example:19092", **expected}


async def test_aiokafka_clients_accept_the_arguments(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="recommender",
        kafka_sasl_password="s3cret",
    )
    # Constructed, never started (no network): aiokafka validates the security arguments here.
    producer = AIOKafkaProducer(**client_kwargs(settings))
    consumer = AIOKafkaConsumer("t", **client_kwargs(settings), group_id=None)
    try:
        for kafka_client in (producer.client, consumer._client):
            assert kafka_client._security_protocol == "SASL_PLAINTEXT"
            assert kafka_client._sasl_mechanism == "PLAIN"
            assert kafka_client._sasl_plain_username == "recommender"
            assert kafka_client._sasl_plain_password == "s3cret"
    finally:
        await producer.stop()
        await consumer.stop()


def test_sasl_ssl_carries_a_tls_context_to_both(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="recommender",
        kafka_sasl_password="s3cret",
    )
    auth = _faust_auth(settings)
    kwargs = client_kwargs(settings)
    assert auth["security_protocol"] == kwargs["security_protocol"] == "SASL_SSL"
    assert {k: auth[k] for k in AUTH_KEYS} == {k: kwargs[k] for k in AUTH_KEYS}
    for context in (auth["ssl_context"], kwargs["ssl_context"]):
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_ssl_only_and_plaintext(tmp_path: Path) -> None:
    tls = _settings(tmp_path, kafka_security_protocol="SSL")
    assert isinstance(credentials(tls), faust.SSLCredentials)
    auth, kwargs = _faust_auth(tls), client_kwargs(tls)
    assert auth["security_protocol"] == kwargs["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in auth and "sasl_mechanism" not in kwargs
    assert isinstance(auth["ssl_context"], ssl.SSLContext) and isinstance(
        kwargs["ssl_context"], ssl.SSLContext
    )

    plain = _settings(tmp_path)
    assert credentials(plain) is None
    assert _faust_auth(plain) == {"security_protocol": "PLAINTEXT"}
    assert client_kwargs(plain) == {
        "bootstrap_servers": "kafka.example:19092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_without_credentials_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="STREAMREC_KAFKA_SASL_USERNAME"):
        _settings(tmp_path, kafka_security_protocol="SASL_PLAINTEXT")
