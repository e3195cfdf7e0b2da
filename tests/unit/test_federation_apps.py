"""Flower ServerApp/ClientApp logic in-process (no processes), and the privacy check of what a site sends.

The privacy check runs a whole federated run (moments, training, evaluation,
calibration) against the real ClientApp through an in-process grid, records every
reply a site produced, and checks each record of each reply against a whitelist:
model-shaped arrays (training), three per-feature moment vectors, scalar metrics and
two fixed-size residual histograms. It also searches every sent number sequence for
the site's rows and labels.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from flower_support import InProcessGrid
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from twinstream.federation import client_app
from twinstream.federation.runtime import write_app_dir, write_run_config
from twinstream.federation.server_app import arrays_from_artifact, run_federated, write_and_publish
from twinstream.federation.server_config import RUN_CONFIG_DEFAULTS, RoundConfig, run_config_overrides
from twinstream.federation.strategies import StrategyConfig
from twinstream.models.features import RulFeatures, feature_names, stateless_names
from twinstream.models.federated import evaluate_arrays, export_site, initial_arrays, local_normalization
from twinstream.models.prior import bundled_prior_dir, load_prior
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest

SITES = [{"site": "site-1", "max-engines": 2}, {"site": "site-4", "max-engines": 2}]
N_FEATURES = len(feature_names())
# The model as specified (prior head on the stateless inputs, twin head on all features + the prior value).
HIST_LEN = 7 * 126  # 7 predicted-RUL bins x 126 one-cycle |residual| bins


def model_shapes() -> list[tuple[int, ...]]:
    shapes = []
    for fan_in in (len(stateless_names()), N_FEATURES + 1):
        hidden = None
        for shape in (a.shape for a in initial_arrays(0)):
            if len(shape) == 2 and shape[1] == fan_in:
                hidden = shape[0]
        assert hidden is not None
        shapes += [(hidden, fan_in), (hidden,), (hidden,), (1,)]
    return shapes


def raw_data(engines: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The site's raw C-MAPSS readings: one row of 21 sensors per cycle, and each engine's series of each sensor."""
    from twinstream.datasets.cmapss import load_subset

    cycles = sorted((c for c in load_subset("FD001").train if c.unit in set(engines)), key=lambda c: (c.unit, c.cycle))
    names = sorted(cycles[0].sensors, key=lambda n: int(n[1:]))
    rows = np.array([[c.sensors[n] for n in names] for c in cycles])
    units = np.array([c.unit for c in cycles])
    columns = [rows[units == u, j] for u in engines for j in range(rows.shape[1])]
    return rows, columns


def _contains(seq: np.ndarray, needles: list[np.ndarray]) -> bool:
    """Whether any needle occurs as a contiguous run of ``seq`` (compared as float32, as arrays travel)."""
    seq = np.asarray(seq, dtype=np.float32)
    by_length: dict[int, set[bytes]] = {}
    for needle in needles:
        by_length.setdefault(len(needle), set()).add(np.nan_to_num(np.asarray(needle, dtype=np.float32), nan=-9e9).tobytes())
    for length, wanted in by_length.items():
        if 0 < length <= len(seq):
            windows = np.lib.stride_tricks.sliding_window_view(np.nan_to_num(seq, nan=-9e9), length)
            if any(np.ascontiguousarray(w).tobytes() in wanted for w in windows):
                return True
    return False


def leaks(message_type: str, content: RecordDict, x: np.ndarray, y: np.ndarray,
          raw: tuple[np.ndarray, list[np.ndarray]] | None = None) -> list[str]:
    """Everything in one reply that is not on the whitelist, or that contains a row or the labels of the site
    (feature rows, label sequence, and with ``raw`` the raw sensor rows and each engine's sensor series)."""
    problems: list[str] = []
    rows = {np.nan_to_num(r.astype(np.float32), nan=-9e9).tobytes() for r in x}
    allowed = {
        "query.moments": ({"moments"}, {"metrics"}),
        "train": ({"arrays"}, {"metrics"}),
        "evaluate": (set(), {"metrics"}),
        "query.calibration": (set(), {"metrics"}),
    }
    if message_type not in allowed:
        return [f"unexpected message type {message_type}"]
    array_names, metric_names = allowed[message_type]
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            if name not in array_names:
                problems.append(f"{message_type}: unexpected ArrayRecord {name!r}")
                continue
            arrays = record.to_numpy_ndarrays()
            shapes = [a.shape for a in arrays]
            expected = model_shapes() if name == "arrays" else [(N_FEATURES,)] * 3
            if shapes != expected:
                problems.append(f"{message_type}: {name} has shapes {shapes}, expected {expected}")
            sequences = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
        elif isinstance(record, MetricRecord):
            if name not in metric_names:
                problems.append(f"{message_type}: unexpected MetricRecord {name!r}")
            sequences = []
            for key, value in record.items():
                if isinstance(value, list):
                    if key not in ("prior_abs_hist", "twin_abs_hist") or len(value) != HIST_LEN:
                        problems.append(f"{message_type}: metric {key} is a list of {len(value)}")
                    sequences.append(np.asarray(value, dtype=np.float64))
                elif not isinstance(value, (int, float)):
                    problems.append(f"{message_type}: metric {key} is {type(value).__name__}")
        elif isinstance(record, ConfigRecord):
            problems.append(f"{message_type}: a ConfigRecord {name!r} is sent ({list(record)})")
            continue
        else:
            problems.append(f"{message_type}: unknown record type {type(record).__name__}")
            continue
        for seq in sequences:
            if len(seq) >= len(y) and any(np.array_equal(w, y) for w in np.lib.stride_tricks.sliding_window_view(seq, len(y))):
                problems.append(f"{message_type}: {name} holds the labels")
            if len(seq) >= N_FEATURES:
                windows = np.lib.stride_tricks.sliding_window_view(seq.astype(np.float32), N_FEATURES)
                if any(np.ascontiguousarray(w).tobytes() in rows for w in windows):
                    problems.append(f"{message_type}: {name} contains a data row")
            if raw is not None and (_contains(seq, list(raw[0])) or _contains(seq, raw[1])):
                problems.append(f"{message_type}: {name} contains raw readings")
    return problems


@pytest.fixture(scope="module")
def run() -> tuple[InProcessGrid, object, RoundConfig]:
    grid = InProcessGrid(client_app.app, SITES)
    cfg = RoundConfig.from_run_config(run_config_overrides(
        StrategyConfig(name="fedprox", proximal_mu=0.01, fraction_evaluate=1.0), num_server_rounds=1, start_from="init",
        publish=False))
    return grid, run_federated(grid, cfg), cfg


def test_train_reply_holds_fine_tuned_model_arrays_and_scalar_metrics() -> None:
    data = client_app.site_data(SITES[0])
    start = initial_arrays(seed=3)
    content = RecordDict({"arrays": ArrayRecord(start),
                          "config": ConfigRecord({"local-epochs": 1, "lr": 0.01, **local_normalization(data).to_config()})})
    reply = client_app.train_reply(content, data)
    assert set(reply) == {"arrays", "metrics"}
    arrays = reply.array_records["arrays"].to_numpy_ndarrays()
    assert [a.shape for a in arrays] == model_shapes()
    assert any(not np.allclose(a, b) for a, b in zip(arrays, start)), "training changed nothing"
    metrics = reply.metric_records["metrics"]
    assert metrics["num-examples"] == data.n == len(data.y)
    assert np.isfinite(metrics["train_loss"])


def test_local_step_options_travel_from_run_config_to_local_fit() -> None:
    import inspect

    from twinstream.models.federated import local_fit

    params = inspect.signature(local_fit).parameters
    assert "batch_size" in params
    cfg = RoundConfig.from_run_config({"local.batch-size": 64})
    assert cfg.local["batch_size"] == 64
    assert {k for k in RUN_CONFIG_DEFAULTS if k.startswith("local.")} == {f"local.{n.replace('_', '-')}" for n in cfg.local}
    sent = ConfigRecord({"local.batch-size": 64, "local.no-such-option": 1, "local.norm": 3, "local.lr": 9.0,
                         "local.threads": 64, "lr": 0.1})
    assert client_app.local_options(sent) == {"batch_size": 64}


def test_a_failing_site_sends_only_the_exception_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "secret-site-folder"
    grid = InProcessGrid(client_app.app, [{"data-dir": str(missing)}])
    message = grid.create_message(RecordDict(), "query.moments", 1, "g")
    with pytest.raises(client_app.SiteError) as raised:
        grid.send_and_receive([message])
    assert "FileNotFoundError" in str(raised.value) and "secret-site-folder" not in str(raised.value)
    assert "secret-site-folder" in capsys.readouterr().err  # the details stay in the site's own log


def test_site_data_from_its_own_folder(tmp_path: Path) -> None:
    export_site(tmp_path / "site", "site-2")
    data = client_app.site_data({"data-dir": str(tmp_path / "site"), "max-engines": 1})
    assert data.x.shape[1] == N_FEATURES and len(data.engines) == 1


def test_privacy_every_reply_of_a_run_holds_only_parameters_and_aggregates(run) -> None:  # noqa: ANN001
    grid, _, _ = run
    types = {t for _, t, _ in grid.replies}
    assert types == {"query.moments", "train", "evaluate", "query.calibration"}
    raw = {node: raw_data(client_app.site_data(cfg).engines) for node, cfg in grid.nodes.items()}
    for node, message_type, content in grid.replies:
        data = client_app.site_data(grid.nodes[node])
        assert leaks(message_type, content, data.x, data.y, raw[node]) == []


def test_privacy_check_finds_a_row_or_the_labels_when_they_are_sent() -> None:
    data = client_app.site_data(SITES[0])
    row = RecordDict({"arrays": ArrayRecord([*initial_arrays(0)[:-1], data.x[5].astype(np.float32)])})
    assert any("data row" in p for p in leaks("train", row, data.x, data.y))
    labels = RecordDict({"metrics": MetricRecord({"num-examples": 1.0, "y": [float(v) for v in data.y]})})
    assert any("labels" in p for p in leaks("evaluate", labels, data.x, data.y))
    extra = RecordDict({"metrics": MetricRecord({"num-examples": 1.0}), "config": ConfigRecord({"file": "train_FD001.txt"})})
    assert any("ConfigRecord" in p for p in leaks("evaluate", extra, data.x, data.y))
    raw = raw_data(data.engines)
    reading = RecordDict({"arrays": ArrayRecord([*initial_arrays(0)[:-1], raw[0][7].astype(np.float32)])})
    assert any("raw readings" in p for p in leaks("train", reading, data.x, data.y, raw))
    series = RecordDict({"metrics": MetricRecord({"num-examples": 1.0, "s": [0.5, *map(float, raw[1][3])]})})
    assert any("raw readings" in p for p in leaks("evaluate", series, data.x, data.y, raw))
    assert leaks("evaluate", RecordDict({"metrics": MetricRecord({"num-examples": 1.0})}), data.x, data.y, raw) == []


def test_run_result_is_a_loadable_prior_and_inverts_to_the_arrays(run, tmp_path: Path) -> None:  # noqa: ANN001
    _, outcome, cfg = run
    assert outcome.sites == 2 and outcome.started_from == "init"
    artifact, version = write_and_publish(outcome, cfg, run_id=42, out_dir=tmp_path, env={})
    prior = load_prior(artifact, RulFeatures().schema(), cache=False)
    assert version == "rul-mlp-vrun42" == prior.manifest.prior_version
    assert prior.manifest.training["strategy"] == "fedprox(mu=0.01)"
    assert set(prior.manifest.calibration) == {"edges", "prior_halfwidth", "twin_halfwidth"}
    with np.load(artifact / prior.manifest.weights_file) as npz:
        weights = {k: npz[k] for k in npz.files}
    back = arrays_from_artifact(weights, outcome.norm)
    assert back is not None
    for a, b in zip(back, outcome.arrays):  # up to the artifact's float32 rounding of the folded-in normalization
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-3)
    data = client_app.site_data(SITES[1])
    same = [evaluate_arrays(arrays, data, outcome.norm)["rmse_twin"] for arrays in (back, outcome.arrays)]
    assert abs(same[0] - same[1]) < 0.1, same
    bundled = PriorManifest.model_validate_json((bundled_prior_dir() / MANIFEST_FILE).read_bytes())
    with np.load(bundled_prior_dir() / bundled.weights_file) as npz:
        assert arrays_from_artifact({k: npz[k] for k in npz.files}, outcome.norm) is None  # the k-fold ensemble: other shape


def test_round_config_parsing() -> None:
    from twinstream.evaluation.federated_eval import FederatedEvalConfig, federated_rounds

    cfg = RoundConfig.from_run_config({})
    recipe = FederatedEvalConfig()
    assert (cfg.num_server_rounds, cfg.local_epochs, cfg.lr) == (federated_rounds(recipe), recipe.epochs, recipe.lr)
    if recipe.equal_steps and recipe.local_steps:  # the recipe's fixed local steps, the same at every site
        assert cfg.local["steps"] == recipe.local_steps and not cfg.equal_steps
    assert cfg.strategy == StrategyConfig() and cfg.publish and cfg.local["optimizer"] == recipe.optimizer
    cfg = RoundConfig.from_run_config({"strategy.name": "krum", "strategy.num-malicious": 1, "strategy.dp-clip-norm": 2.5,
                                       "strategy.dp-noise-multiplier": 0.1, "strategy.min-nodes": 3, "num-server-rounds": 4})
    assert (cfg.strategy.name, cfg.strategy.num_malicious, cfg.strategy.dp_clip_norm, cfg.strategy.min_nodes) == ("krum", 1, 2.5, 3)
    assert cfg.num_server_rounds == 4
    with pytest.raises(ValueError, match="unknown run config keys"):
        RoundConfig.from_run_config({"num-rounds": 2})
    with pytest.raises(ValueError):
        RoundConfig.from_run_config({"strategy.name": "fedsgd"})
    with pytest.raises(ValueError):
        RoundConfig.from_run_config({"strategy.dp-noise-multiplier": 1.0})  # noise without clipping
    assert RoundConfig.from_run_config({"registry-url": ""}).resolved_registry_url({"TWINSTREAM_REGISTRY_URL": "http://r:1/"}) == "http://r:1"


def test_generated_flower_app_is_valid_and_overrides_round_trip(tmp_path: Path) -> None:
    from flwr.cli.config_utils import load_and_validate
    from flwr.common.config import flatten_dict, parse_config_args

    app = write_app_dir(tmp_path)
    config, _ = load_and_validate(app / "pyproject.toml", check_module=True)
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "twinstream.federation.server_app:app", "clientapp": "twinstream.federation.client_app:app"}
    assert flatten_dict(config["tool"]["flwr"]["app"]["config"]) == RUN_CONFIG_DEFAULTS
    overrides = run_config_overrides(StrategyConfig(name="fedadam", server_lr=0.05), num_server_rounds=3,
                                     registry_url="http://h:1/x'y")
    path = write_run_config(tmp_path / "o.toml", overrides)
    assert parse_config_args([str(path)]) == overrides == flatten_dict(tomllib.loads(path.read_text()))
    assert RoundConfig.from_run_config(overrides).strategy.server_lr == 0.05
    with pytest.raises(ValueError, match="unknown run config keys"):
        write_run_config(tmp_path / "bad.toml", {"rounds": 3})


class Registry:
    """The registry app in-process (FastAPI TestClient: no server), and clients bound to it."""

    def __init__(self, root: Path) -> None:
        from fastapi.testclient import TestClient

        from twinstream.federation.registry import create_registry_app
        from twinstream.federation.signing import generate_private_key
        from twinstream.federation.store import PriorStore

        self.http = TestClient(create_registry_app(PriorStore(root, generate_private_key()), TOKEN), base_url=URL)

    def client(self):  # -> RegistryClient
        from twinstream.federation.client import RegistryClient

        return RegistryClient(URL, transport=self.http._transport)

    def versions(self) -> list[str]:
        response = self.http.get("/v1/priors/rul-mlp")
        return response.json()["versions"] if response.status_code == 200 else []


TOKEN, URL = "unit-token", "http://registry"


def test_runs_publish_the_next_versions_and_start_from_the_latest_one(run, tmp_path: Path) -> None:  # noqa: ANN001
    from twinstream.federation.server_app import TOKEN_ENV, starting_arrays

    _, outcome, _ = run
    registry = Registry(tmp_path / "registry")
    cfg = RoundConfig.from_run_config({"registry-url": URL, "start-from": "latest"})
    bundled = int(PriorManifest.model_validate_json((bundled_prior_dir() / MANIFEST_FILE).read_bytes()).version)
    _, first = write_and_publish(outcome, cfg, 1, out_dir=tmp_path / "a", env={TOKEN_ENV: TOKEN}, http=registry.http)
    assert first == f"rul-mlp-v{bundled + 1}" and registry.versions() == [str(bundled + 1)]
    arrays, started = starting_arrays(cfg, outcome.norm, URL, registry.client())
    assert started == first
    for a, b in zip(arrays, outcome.arrays):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-3)
    _, second = write_and_publish(outcome, cfg, 2, out_dir=tmp_path / "b", env={TOKEN_ENV: TOKEN}, http=registry.http)
    assert second == f"rul-mlp-v{bundled + 2}"
    fresh, started = starting_arrays(RoundConfig.from_run_config({"start-from": "init", "seed": 5}), outcome.norm, URL,
                                     registry.client())
    assert started == "init" and all(np.array_equal(a, b) for a, b in zip(fresh, initial_arrays(5)))


def test_server_publish_without_a_valid_token_fails_and_publishes_nothing(run, tmp_path: Path) -> None:  # noqa: ANN001
    from twinstream.federation.publish import PublishError
    from twinstream.federation.server_app import TOKEN_ENV

    _, outcome, _ = run
    registry = Registry(tmp_path / "registry")
    cfg = RoundConfig.from_run_config({"registry-url": URL})
    with pytest.raises(PublishError, match="HTTP 401"):
        write_and_publish(outcome, cfg, 1, out_dir=tmp_path, env={TOKEN_ENV: "wrong"}, http=registry.http)
    with pytest.raises(PublishError, match=TOKEN_ENV):
        write_and_publish(outcome, cfg, 1, out_dir=tmp_path, env={}, http=registry.http)
    assert registry.versions() == []


def test_publish_access_is_checked_before_training(tmp_path: Path) -> None:
    from twinstream.federation.publish import PublishError, check_publish_access

    registry = Registry(tmp_path / "registry")
    check_publish_access(URL, "rul-mlp", TOKEN, http=registry.http)  # accepted token: no error
    with pytest.raises(PublishError, match="HTTP 401"):
        check_publish_access(URL, "rul-mlp", "wrong", http=registry.http)
    with pytest.raises(PublishError, match="no publish token"):
        check_publish_access(URL, "rul-mlp", "", http=registry.http)
    with pytest.raises(PublishError, match="unreachable"):
        check_publish_access("http://127.0.0.1:9", "rul-mlp", TOKEN, timeout_s=2)  # nothing listens on port 9
    assert registry.versions() == []


def test_equal_steps_reach_every_site_as_the_same_local_step_count() -> None:
    grid = InProcessGrid(client_app.app, SITES)
    cfg = RoundConfig.from_run_config(run_config_overrides(num_server_rounds=1, start_from="init", publish=False,
                                                           equal_steps=True))
    run_federated(grid, cfg)
    sizes = [client_app.site_data(c).n for c in SITES]
    batch = int(cfg.local.get("batch_size", 256))
    expected = cfg.local_epochs * -(-sum(sizes) // (len(sizes) * batch))  # ceil(mean rows / batch) per epoch
    steps = [content.config_records["config"]["local.steps"] for _, t, content in grid.sent if t == "train"]
    assert steps == [expected, expected]
