"""Kafka security settings -> client options, without a broker: what each library gets, the errors that name a
setting, and that no secret shows in repr(Settings), in ``--help`` or in what the Faust app logs about its credentials.
(The broker-facing behaviour is in tests/integration/test_secured_kafka.py.)
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinstream.kafka_security import (
    KafkaSecurityError,
    check_settings,
    client_options,
    confluent_options,
    faust_credentials,
    sasl_password,
)
from twinstream.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from tls_certs import make_pki  # noqa: E402

SECRET = "kafka-secret-4c1d"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def sasl_ssl(pki, **overrides: object) -> Settings:
    return Settings(**{"broker": "kafka://localhost:9093", "kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "twin",
                       "kafka_sasl_password": SECRET, "kafka_ssl_cafile": pki.ca, **overrides})


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = Settings()
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None
    assert confluent_options(settings) == {"security.protocol": "plaintext"}


def test_sasl_ssl_gives_every_library_the_same_credentials(pki) -> None:
    settings = sasl_ssl(pki, kafka_sasl_mechanism="SCRAM-SHA-256")
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "twin" and options["sasl_plain_password"] == SECRET
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    credentials = faust_credentials(settings)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    faust_auth = credentials_to_aiokafka_auth(credentials)
    assert {k: faust_auth[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "twin",
        "sasl_plain_password": SECRET}
    assert isinstance(faust_auth["ssl_context"], ssl.SSLContext)
    assert SECRET not in repr(credentials)
    assert confluent_options(settings) == {
        "security.protocol": "sasl_ssl", "ssl.ca.location": str(pki.ca), "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "twin", "sasl.password": SECRET}


def test_the_faust_app_gets_the_credentials(pki, tmp_path: Path) -> None:
    from faust.auth import SASLCredentials

    from twinstream.streams.app import create_app

    app = create_app(sasl_ssl(pki, data_dir=tmp_path, app_id="secure-app"))
    assert isinstance(app.conf.broker_credentials, SASLCredentials)
    assert app.conf.broker_credentials.mechanism.value == "SCRAM-SHA-512"


def test_ssl_only_and_mutual_tls(pki) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca, kafka_ssl_certfile=pki.client_cert,
                        kafka_ssl_keyfile=pki.client_key, kafka_ssl_check_hostname=False)
    options = client_options(settings)
    assert set(options) == {"security_protocol", "ssl_context"} and not options["ssl_context"].check_hostname
    assert confluent_options(settings)["ssl.certificate.location"] == str(pki.client_cert)
    assert confluent_options(settings)["ssl.endpoint.identification.algorithm"] == "none"
    from faust.auth import SSLCredentials

    assert isinstance(faust_credentials(settings), SSLCredentials)


def test_the_password_file_wins_and_loses_its_newline(pki, tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("from-the-file\n")
    assert sasl_password(sasl_ssl(pki, kafka_sasl_password_file=path)) == "from-the-file"
    with pytest.raises(KafkaSecurityError, match="TWINSTREAM_KAFKA_SASL_PASSWORD_FILE=.*cannot read"):
        sasl_password(sasl_ssl(pki, kafka_sasl_password_file=tmp_path / "absent"))


@pytest.mark.parametrize(("overrides", "named"), [
    ({"kafka_sasl_username": ""}, "TWINSTREAM_KAFKA_SASL_USERNAME"),
    ({"kafka_sasl_password": ""}, "TWINSTREAM_KAFKA_SASL_PASSWORD_FILE or TWINSTREAM_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"}, "PLAIN sends the password in clear"),
    ({"kafka_ssl_cafile": Path("/nonexistent/ca.pem")}, "TWINSTREAM_KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file"),
    ({"kafka_ssl_certfile": Path(__file__)}, "needs both TWINSTREAM_KAFKA_SSL_CERTFILE and TWINSTREAM_KAFKA_SSL_KEYFILE"),
], ids=["no-user", "no-password", "plain-in-clear", "missing-ca", "cert-without-key"])
def test_misconfiguration_names_the_setting(pki, overrides: dict, named: str) -> None:
    with pytest.raises(KafkaSecurityError, match=named.replace("(", r"\(")):
        check_settings(sasl_ssl(pki, **overrides))


def test_a_ca_file_that_is_not_pem_names_the_setting(pki, tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(KafkaSecurityError, match="TWINSTREAM_KAFKA_SSL_CAFILE"):
        client_options(sasl_ssl(pki, kafka_ssl_cafile=bogus))


def test_no_secret_in_repr_str_or_json_of_settings(pki) -> None:
    settings = sasl_ssl(pki, influx_token="influx-secret-9a", api_token="api-secret-3b")
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())):
        for secret in (SECRET, "influx-secret-9a", "api-secret-3b"):
            assert secret not in text


@pytest.mark.parametrize("command", [[], ["broker"], ["worker"], ["sink"], ["sidecar"], ["replay"], ["topics", "create"],
                                     ["connect"], ["demo"]])
def test_no_secret_in_help_output(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    from twinstream.cli import app

    monkeypatch.setenv("TWINSTREAM_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("TWINSTREAM_KAFKA_SASL_USERNAME", "twin")
    result = CliRunner().invoke(app, [*command, "--help"], env={"TWINSTREAM_KAFKA_SASL_PASSWORD": SECRET, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
