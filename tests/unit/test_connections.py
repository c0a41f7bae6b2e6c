"""Settings -> Kafka client configuration: one description, mapped to aiokafka's options and Java's
properties; a missing credential is a one-line ConfigError; the password never shows in the object."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from schemas.connections import KafkaConnection
from schemas.errors import ConfigError
from slotguard.settings import Settings
from slotguard.wiring import kafka_connection, worker_config


def test_plaintext_is_just_the_servers() -> None:
    options = KafkaConnection(bootstrap="a:1, b:2").aiokafka_options()
    assert options == {"bootstrap_servers": ["a:1", "b:2"], "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_maps_to_aiokafka_and_java_alike(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = Settings(
        kafka_bootstrap="k:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_username="slotguard",
        kafka_password=SecretStr('pa"ss'),
        kafka_ca_file=ca_file,
    )
    kafka = kafka_connection(settings)
    options = kafka.aiokafka_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "slotguard",
        'pa"ss',
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    java = kafka.java_properties()
    assert java["security.protocol"] == "SASL_SSL"
    assert java["sasl.mechanism"] == "SCRAM-SHA-512"
    assert java["ssl.truststore.location"] == str(ca_file)
    assert java["sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="slotguard" password="pa\\"ss";'
    )
    assert 'pa"ss' not in repr(kafka)
    assert worker_config(settings).kafka == kafka  # the worker, feed and commands share it


def test_sasl_without_credentials_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="SLOTGUARD_KAFKA_USERNAME and SLOTGUARD_KAFKA_PASSWORD"):
        KafkaConnection(security_protocol="SASL_PLAINTEXT").aiokafka_options()
    with pytest.raises(ConfigError, match="SLOTGUARD_KAFKA_USERNAME and SLOTGUARD_KAFKA_PASSWORD"):
        KafkaConnection(security_protocol="SASL_PLAINTEXT").java_properties()


def test_an_unreadable_ca_file_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TLS files"):
        KafkaConnection(security_protocol="SSL", ca_file=str(tmp_path / "missing.pem")).aiokafka_options()
