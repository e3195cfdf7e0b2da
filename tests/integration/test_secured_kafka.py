"""twinstream against a broker that demands TLS and SASL/SCRAM: the embedded broker's secured listener.

(a) The worker and the gap-filling sidecar run end to end over SASL_SSL (password from a
file, as a mounted Secret gives it): telemetry in, predictions and fills out, the
sidecar's consumer group commits; the InfluxDB sink writes predictions it read over
SASL_SSL. (b) A wrong password: the worker and the sink exit non-zero within the connect
timeout, naming the user and the password setting. (c) A plaintext client against the TLS
listener is refused with a message naming the security protocol setting. (d) Mutual TLS:
without a client certificate the connection is refused, with one it works. No password
appears in any process log.

The certificates are made at test time (tls_certs.py).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import SecretStr
from tls_certs import Pki, make_pki
from worker_harness import WorkerProcess, wait_until

from twinstream.demo_gaps import committed_up_to
from twinstream.kafka_security import KafkaSecurityError, check_connection, client_options
from twinstream.processes import settings_env
from twinstream.schemas import Prediction
from twinstream.schemas.topics import GAPS, PREDICTIONS, SYNTHETIC, TELEMETRY
from twinstream.secure_broker import SecuredBroker
from twinstream.settings import Settings
from twinstream.streams.sidecar import sidecar_app_id
from twinstream.streams.topic_admin import ensure_topics

USER, PASSWORD = "twin-worker", "correct horse battery staple 7f3a"
WRONG = "not the password 91c2"
SENSORS = ("s1", "s2", "s3", "s4")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    log = tmp_path_factory.mktemp("secured-broker") / "guard.log"
    with SecuredBroker(tls_cert=pki.server_cert, tls_key=pki.server_key, users={USER: PASSWORD}, log_path=log) as broker:
        yield broker


def secured_settings(broker: SecuredBroker, pki: Pki, tmp_path: Path, app_id: str, **overrides: object) -> Settings:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    base: dict[str, object] = dict(
        broker=broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"), partitions=2,
        data_dir=tmp_path / "state", twins_spec="none", kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username=USER, kafka_sasl_password_file=password_file,
        kafka_ssl_cafile=pki.ca, kafka_connect_timeout_s=10.0,
    )
    return Settings(**{**base, **overrides})


class SecureReader:
    """Reads a topic from the beginning over the secured listener (no consumer group)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=settings.broker_servers, group_id=None, enable_auto_commit=False,
                                      auto_offset_reset="earliest", **client_options(settings))
        partitions = self.consumer.partitions_for_topic(topic) or {0, 1}
        self.consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        self.values: list[dict] = []

    def poll(self) -> int:
        for batch in self.consumer.poll(timeout_ms=300, max_records=5000).values():
            self.values.extend(orjson.loads(m.value) for m in batch)
        return len(self.values)

    def close(self) -> None:
        self.consumer.close()


def send_telemetry(producer: KafkaProducer, topic: str, rounds: range, t0: datetime, drop: str | None,
                   offsets: dict[int, int], sent: set[tuple[str, int]]) -> None:
    rng = random.Random(rounds.start)
    futures = []
    for seq in rounds:
        for k, entity in enumerate(("pump-1", "pump-2")):
            metrics = {s: 100.0 * (j + 1) + 0.05 * (k + 1) * seq + rng.gauss(0, 0.5) for j, s in enumerate(SENSORS)}
            if drop and entity == "pump-2":
                metrics[drop] = None
            body = {"entity_id": entity, "event_time": t0 + timedelta(seconds=seq), "seq": seq, "metrics": metrics}
            futures.append(producer.send(topic, key=entity.encode(), value=orjson.dumps(body)))
            sent.add((entity, seq))
    for future in futures:
        meta = future.get(timeout=30)
        offsets[meta.partition] = max(offsets.get(meta.partition, 0), meta.offset + 1)


def assert_no_secret(*paths: Path) -> None:
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        assert PASSWORD not in text and WRONG not in text, f"a password is in {path}"


def test_worker_and_sidecar_run_end_to_end_over_sasl_ssl(secured: SecuredBroker, pki: Pki, app_id: str,
                                                         tmp_path: Path) -> None:
    settings = secured_settings(secured, pki, tmp_path, app_id)
    ensure_topics(settings)  # the topic admin over SASL_SSL
    env = settings_env(settings)
    assert "TWINSTREAM_KAFKA_SASL_PASSWORD" not in env or env["TWINSTREAM_KAFKA_SASL_PASSWORD"] == ""
    ns = settings.topic_namespace
    producer = KafkaProducer(bootstrap_servers=settings.broker_servers, acks="all", **client_options(settings))
    predictions = SecureReader(settings, PREDICTIONS.in_namespace(ns).name)
    fills = SecureReader(settings, SYNTHETIC.in_namespace(ns).name)
    gaps = SecureReader(settings, GAPS.in_namespace(ns).name)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    sidecar = WorkerProcess(env, tmp_path / "sidecar.log", module="twinstream.streams.sidecar").start()
    telemetry = TELEMETRY.in_namespace(ns).name
    t0 = datetime.now(UTC) - timedelta(seconds=200)
    offsets: dict[int, int] = {}
    sent: set[tuple[str, int]] = set()
    try:
        send_telemetry(producer, telemetry, range(0, 40), t0, None, offsets, sent)

        def predicted() -> bool:
            predictions.poll()
            return sent <= {(v["entity_id"], v["seq"]) for v in predictions.values}

        wait_until(predicted, 60, lambda: f"predictions over SASL_SSL; worker log:\n{worker.log_tail()}")
        for seq in range(40, 70):  # pump-2 loses s3: the worker reports a gap, the sidecar fills it
            send_telemetry(producer, telemetry, range(seq, seq + 1), t0, "s3", offsets, sent)
            time.sleep(0.05)
        wait_until(predicted, 60, lambda: f"predictions for every event; worker log:\n{worker.log_tail()}")
        wait_until(lambda: gaps.poll() >= 1, 60, lambda: f"a gap message; worker log:\n{worker.log_tail()}")
        wait_until(lambda: fills.poll() >= 1, 90, lambda: f"a synthetic fill; sidecar log:\n{sidecar.log_tail()}")
        assert all(v["synthetic"] for v in fills.values)
        wait_until(lambda: committed_up_to(settings.broker_servers, sidecar_app_id(settings),
                                           {(telemetry, p): end for p, end in offsets.items()}, client_options(settings)),
                   60, "the sidecar's group to commit every telemetry message", poll_s=1.0)
        assert all(Prediction.model_validate(v).entity_id in ("pump-1", "pump-2") for v in predictions.values)
        assert worker.alive() and sidecar.alive()
    finally:
        worker.stop()
        sidecar.stop()
        producer.close()
        for reader in (predictions, fills, gaps):
            reader.close()
    assert_no_secret(tmp_path / "worker.log", tmp_path / "sidecar.log", secured.log_path)


def test_sink_writes_predictions_read_over_sasl_ssl(secured: SecuredBroker, pki: Pki, app_id: str, tmp_path: Path,
                                                    victoria_metrics) -> None:
    settings = secured_settings(secured, pki, tmp_path, app_id, influx_url=victoria_metrics.url, influx_api="v2",
                                influx_flush_interval_s=0.2)
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.broker_servers, acks="all", **client_options(settings))
    topic = PREDICTIONS.in_namespace(settings.topic_namespace).name
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(30):
        prediction = Prediction(entity_id=f"{app_id}-e1", event_time=t0 + timedelta(seconds=seq), seq=seq, target="rul",
                                value=100.0 - seq, model_version="test", updates=seq)
        producer.send(topic, key=prediction.entity_id.encode(), value=prediction.model_dump_json().encode())
    producer.flush(timeout=30)
    producer.close()
    sink = WorkerProcess(settings_env(settings), tmp_path / "sink.log", module="twinstream.streams.influx_sink").start()
    try:
        wait_until(lambda: len(victoria_metrics.entity_seqs(app_id)) >= 30, 90,
                   lambda: f"30 points in VictoriaMetrics; sink log:\n{sink.log_tail()}")
    finally:
        sink.stop()
    assert_no_secret(tmp_path / "sink.log")


def run_until_exit(module: str, settings: Settings, log: Path, timeout_s: float) -> tuple[int, str]:
    """Start ``python -m module`` and wait (bounded) for it to end by itself; its return code and output."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", module], env=settings_env(settings), stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{module} did not exit within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}") from None
    return code, log.read_text(errors="replace")


@pytest.mark.parametrize("module", ["twinstream.streams.worker", "twinstream.streams.influx_sink"])
def test_wrong_password_exits_naming_the_cause(secured: SecuredBroker, pki: Pki, app_id: str, tmp_path: Path,
                                               module: str) -> None:
    settings = secured_settings(secured, pki, tmp_path, app_id, kafka_sasl_password_file=None, kafka_sasl_password=WRONG,
                                influx_url="http://127.0.0.1:9")
    started = time.monotonic()
    code, output = run_until_exit(module, settings, tmp_path / "out.log", timeout_s=settings.kafka_connect_timeout_s + 30)
    assert code != 0
    assert f"refused user '{USER}'" in output and "TWINSTREAM_KAFKA_SASL_PASSWORD" in output, output[-2000:]
    assert time.monotonic() - started < settings.kafka_connect_timeout_s + 30
    assert WRONG not in output and PASSWORD not in output


def test_plaintext_client_is_refused_by_the_tls_listener(secured: SecuredBroker, pki: Pki, app_id: str,
                                                         tmp_path: Path) -> None:
    settings = secured_settings(secured, pki, tmp_path, app_id, kafka_security_protocol="PLAINTEXT")
    code, output = run_until_exit("twinstream.streams.worker", settings, tmp_path / "out.log",
                                  timeout_s=settings.kafka_connect_timeout_s + 30)
    assert code != 0
    assert "refused a plaintext connection" in output and "TWINSTREAM_KAFKA_SECURITY_PROTOCOL" in output, output[-2000:]

    async def plain_producer() -> None:  # a bare aiokafka client, no probe: it must fail too, not hang
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap_servers, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(producer.start(), 15)
        finally:
            await producer.stop()

    from aiokafka.errors import KafkaConnectionError

    with pytest.raises(KafkaConnectionError):
        asyncio.run(plain_producer())


def test_tls_without_sasl_and_an_untrusted_ca_are_refused(secured: SecuredBroker, pki: Pki, app_id: str,
                                                          tmp_path: Path) -> None:
    with pytest.raises(KafkaSecurityError, match="TWINSTREAM_KAFKA_SSL_CAFILE"):
        check_connection(secured_settings(secured, pki, tmp_path, app_id, kafka_ssl_cafile=pki.other_ca))
    with pytest.raises(KafkaSecurityError, match="SASL"):
        check_connection(secured_settings(secured, pki, tmp_path, app_id, kafka_security_protocol="SSL"))
    with pytest.raises(KafkaSecurityError, match="no such file"):
        check_connection(secured_settings(secured, pki, tmp_path, app_id, kafka_ssl_cafile=tmp_path / "missing.pem"))
    check_connection(secured_settings(secured, pki, tmp_path, app_id, kafka_sasl_mechanism="SCRAM-SHA-256"))


def test_mutual_tls_needs_the_client_certificate(pki: Pki, app_id: str, tmp_path: Path) -> None:
    with SecuredBroker(tls_cert=pki.server_cert, tls_key=pki.server_key, client_ca=pki.ca,
                       log_path=tmp_path / "guard.log") as broker:
        settings = Settings(broker=broker.url, app_id=app_id, kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca,
                            kafka_connect_timeout_s=5.0)
        with pytest.raises(KafkaSecurityError, match="TWINSTREAM_KAFKA_SSL_CERTFILE"):
            check_connection(settings)
        check_connection(settings.model_copy(update={"kafka_ssl_certfile": pki.client_cert,
                                                     "kafka_ssl_keyfile": pki.client_key}))


def test_twinstream_broker_command_serves_tls_and_scram(pki: Pki, app_id: str, tmp_path: Path) -> None:
    """`twinstream broker --tls-cert --tls-key --user`: a client logs in with that user, another password is refused."""
    from twinstream.broker import free_port, wait_for_port

    port = free_port()
    log = tmp_path / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "twinstream", "broker", "--port", str(port), "--tls-cert",
                                    str(pki.server_cert), "--tls-key", str(pki.server_key), "--user", f"{USER}:{PASSWORD}"],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 30, process)
        settings = Settings(broker=f"kafka://127.0.0.1:{port}", app_id=app_id, kafka_security_protocol="SASL_SSL",
                            kafka_sasl_username=USER, kafka_sasl_password=PASSWORD, kafka_ssl_cafile=pki.ca,
                            kafka_connect_timeout_s=10.0)
        wait_until(lambda: "SASL_SSL" in log.read_text(), 15, lambda: f"the listening line:\n{log.read_text()}")
        check_connection(settings)
        with pytest.raises(KafkaSecurityError, match="refused user"):
            check_connection(settings.model_copy(update={"kafka_sasl_password": SecretStr(WRONG)}))
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert_no_secret(log)


def test_hostname_verification_refuses_a_certificate_for_another_name(pki: Pki, app_id: str, tmp_path: Path) -> None:
    with SecuredBroker(tls_cert=pki.misnamed_cert, tls_key=pki.misnamed_key, log_path=tmp_path / "guard.log") as broker:
        settings = Settings(broker=broker.url, app_id=app_id, kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca,
                            kafka_connect_timeout_s=5.0)
        with pytest.raises(KafkaSecurityError, match="TWINSTREAM_KAFKA_SSL_CHECK_HOSTNAME"):
            check_connection(settings)
        check_connection(settings.model_copy(update={"kafka_ssl_check_hostname": False}))  # same CA, name not checked


def test_plant_connector_and_replay_deliver_over_sasl_ssl(secured: SecuredBroker, pki: Pki, app_id: str, tmp_path: Path) -> None:
    """`twinstream connect` (a CSV replay source) delivers through the secured listener; with a wrong password it exits 1
    naming the cause instead of buffering forever. `twinstream replay cmapss` gets every event acknowledged."""
    import yaml

    settings = secured_settings(secured, pki, tmp_path, app_id)
    ensure_topics(settings)
    data = tmp_path / "kilns.csv"
    data.write_text("kiln,t,temp\n" + "".join(f"k{i % 2},{1_767_225_600 + i},{900 + i}\n" for i in range(20)))
    config = tmp_path / "connectors.yaml"
    config.write_text(yaml.safe_dump({
        "buffer": {"path": str(tmp_path / "buffer.sqlite")},
        "sources": [{"type": "file", "name": "kilns", "path": str(data), "entity_column": "kiln", "time_column": "t",
                     "time_unit": "s", "progress": False}]}))

    def connect(settings: Settings) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "twinstream", "connect", "--config", str(config)], env=settings_env(settings),
                              capture_output=True, text=True, timeout=120)

    refused = connect(settings.model_copy(update={"kafka_sasl_password_file": None, "kafka_sasl_password": SecretStr(WRONG)}))
    assert refused.returncode == 1 and "refused user" in refused.stderr, refused.stderr[-2000:]
    result = connect(settings)
    assert result.returncode == 0 and "20 samples sent" in result.stderr, result.stderr[-2000:]
    reader = SecureReader(settings, TELEMETRY.in_namespace(settings.topic_namespace).name)
    try:
        wait_until(lambda: reader.poll() >= 20, 30, "20 samples on the telemetry topic")
        assert sorted(v["metrics"]["temp"] for v in reader.values) == [900.0 + i for i in range(20)]
    finally:
        reader.close()
    assert WRONG not in refused.stderr + refused.stdout and PASSWORD not in result.stderr + result.stdout
    replay = subprocess.run([sys.executable, "-m", "twinstream", "replay", "cmapss"], env=settings_env(settings),
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0 and "sent 33727 events" in replay.stderr, replay.stderr[-2000:]  # every one acknowledged
