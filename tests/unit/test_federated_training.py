"""Federated prior training without a network: site split, local step, Flower aggregation, artifact, `eval federated`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from twinstream.commands.evaluate import app
from twinstream.datasets.cmapss import load_subset
from twinstream.evaluation.federated_docs import section_markdown
from twinstream.evaluation.federated_eval import federated_statistic, run_round
from twinstream.federation.strategies import STRATEGIES, StrategyConfig, make_strategy
from twinstream.models import federated as fm
from twinstream.models.features import RulFeatures
from twinstream.models.prior import PriorMismatchError, load_prior
from twinstream.models.prior_twin import PriorTwin


@pytest.fixture(scope="module")
def small_site() -> fm.SiteData:
    return fm.load_site_data(None, site="site-2", max_engines=4)


@pytest.fixture(scope="module")
def norm(small_site: fm.SiteData) -> fm.Normalization:
    return fm.local_normalization(small_site)


# -- the split ----------------------------------------------------------------------------

def test_site_split_is_deterministic_disjoint_complete_and_by_lifetime() -> None:
    life = load_subset("FD001").train_life
    first, again = fm.site_engines(None), fm.site_engines(None)
    assert first == again
    assert list(first) == ["site-1", "site-2", "site-3", "site-4"]
    units = [u for us in first.values() for u in us]
    assert sorted(units) == sorted(life) and len(units) == len(set(units)) == 100
    assert [len(us) for us in first.values()] == [25, 25, 25, 25]
    # non-IID: lifetime blocks that do not overlap (ties broken by unit id), so label ranges differ
    ranges = [(min(life[u] for u in us), max(life[u] for u in us)) for us in first.values()]
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    means = [np.mean([life[u] for u in us]) for us in first.values()]
    assert means[-1] > 1.5 * means[0]


def test_site_data_uses_the_twins_features_and_only_the_sites_engines(small_site: fm.SiteData) -> None:
    engines = fm.site_engines(None)["site-2"][:4]
    assert small_site.engines == engines
    assert small_site.x.shape[1] == len(RulFeatures().schema().names)
    fd = load_subset("FD001")
    unit = engines[0]
    rows = [r for r in fd.train if r.unit == unit]
    fx = RulFeatures()
    expected = [fx.update_vector(r.sensors) for r in rows]
    np.testing.assert_allclose(small_site.x[small_site.units == unit], np.array(expected))
    assert small_site.y.max() <= fm.CAP and small_site.y.min() >= 0


def test_a_site_given_its_own_folder_loads_all_of_its_engines(tmp_path: Path) -> None:
    fm.export_site(tmp_path, "site-3")
    own = fm.load_site_data(tmp_path)
    assert own.engines == fm.site_engines(None)["site-3"]
    np.testing.assert_allclose(own.x, fm.load_site_data(None, site="site-3").x)


def test_pooled_moments_from_site_statistics_equal_the_pooled_data() -> None:
    sites = [fm.load_site_data(None, site=s, max_engines=3) for s in fm.site_names()]
    norm = fm.normalization_from_moments(federated_statistic([fm.site_moments(s) for s in sites]))
    direct = fm.local_normalization(fm.pooled(sites))
    x = fm.pooled(sites).x
    np.testing.assert_allclose(norm.mean, np.nanmean(x, axis=0), rtol=1e-9)
    np.testing.assert_allclose(norm.std, np.nanstd(x, axis=0), rtol=1e-5)  # E[x^2] - mean^2 in float64
    np.testing.assert_allclose(norm.std, direct.std, rtol=1e-5)
    arrays, metrics = fm.site_moments(sites[0])
    assert [a.shape for a in arrays] == [(x.shape[1],)] * 3 and set(metrics) == {"num-examples"}


# -- the local step -----------------------------------------------------------------------

@pytest.mark.parametrize("heads", ["both", "prior", "twin"])
def test_local_fit_reduces_the_loss_and_keeps_untrained_heads(small_site, norm, heads) -> None:
    start = fm.initial_arrays(seed=1)
    before = fm.evaluate_arrays(start, small_site, norm)
    arrays, metrics = fm.local_fit(start, small_site, epochs=3, lr=0.3, norm=norm, heads=heads, seed=1)
    after = fm.evaluate_arrays(arrays, small_site, norm)
    assert metrics["num-examples"] == small_site.n and np.isfinite(metrics["train_loss"])
    if heads != "twin":
        assert after["rmse_prior"] < 0.8 * before["rmse_prior"]
    if heads != "prior":
        assert after["rmse_twin"] < 0.8 * before["rmse_twin"]
    frozen = {"prior": range(4, 8), "twin": range(0, 4), "both": range(0)}[heads]
    for i in frozen:
        np.testing.assert_array_equal(arrays[i], start[i])


def test_fedprox_term_keeps_weights_closer_to_the_global_ones(small_site, norm) -> None:
    start = fm.initial_arrays(seed=2)

    def distance(mu: float) -> float:
        arrays, _ = fm.local_fit(start, small_site, epochs=2, lr=0.3, norm=norm, proximal_mu=mu, seed=3)
        return float(np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(arrays, start))))

    free, prox = distance(0.0), distance(10.0)
    assert prox < 0.8 * free


def test_local_fit_is_deterministic_for_a_seed(small_site, norm) -> None:
    a, _ = fm.local_fit(fm.initial_arrays(0), small_site, epochs=1, lr=0.1, norm=norm, seed=5)
    b, _ = fm.local_fit(fm.initial_arrays(0), small_site, epochs=1, lr=0.1, norm=norm, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# -- strategies ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("dp", [False, True])
def test_make_strategy_builds_every_option(name: str, dp: bool) -> None:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy

    cfg = StrategyConfig(name=name, dp_clip_norm=1.0 if dp else None, dp_noise_multiplier=0.5 if dp else 0.0)
    strategy = make_strategy(cfg, num_sites=4)
    assert isinstance(strategy, Strategy)
    assert isinstance(strategy, DifferentialPrivacyServerSideFixedClipping) == dp
    inner = strategy.strategy if dp else strategy
    assert type(inner).__name__.lower() == name


def test_strategy_config_validates() -> None:
    with pytest.raises(ValueError):
        StrategyConfig(name="fedsgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StrategyConfig(dp_noise_multiplier=1.0)  # noise without a clip norm
    with pytest.raises(ValueError):
        StrategyConfig(proximal_mu=-1.0)
    with pytest.raises(ValidationError):  # frozen
        StrategyConfig().name = "krum"  # type: ignore[misc]


def _known_round(strategy, sent: list[np.ndarray], replies: list[tuple[list[np.ndarray], float]]):
    """One in-process round where site i replies with replies[i] (arrays, num-examples); records what sites got."""
    seen: list[dict] = []

    def site_fn(i, received, config):
        seen.append({"i": i, "received": received, "config": dict(config)})
        arrays, n = replies[i]
        return arrays, {"num-examples": n, "train_loss": 1.0}

    out, metrics = run_round(strategy, 1, sent, {"lr": 0.1}, site_fn, num_sites=len(replies))
    return out, metrics, seen


def test_one_flower_fedavg_round_equals_the_hand_computed_weighted_mean() -> None:
    rng = np.random.default_rng(7)
    sent = [np.zeros(s, dtype=np.float32) for s in (a.shape for a in fm.initial_arrays(0))]
    replies = [([rng.normal(size=a.shape).astype(np.float32) for a in sent], n) for n in (10.0, 30.0, 60.0)]
    out, metrics, seen = _known_round(make_strategy(StrategyConfig(name="fedavg"), 3), sent, replies)
    weights = np.array([10.0, 30.0, 60.0]) / 100.0
    for k in range(len(sent)):
        expected = np.average(np.stack([r[0][k] for r in replies]), axis=0, weights=weights)
        np.testing.assert_allclose(out[k], expected, rtol=1e-5, atol=1e-6)
    assert sorted(s["i"] for s in seen) == [0, 1, 2]
    assert all(s["config"]["lr"] == 0.1 and s["config"]["server-round"] == 1 for s in seen)
    assert metrics["train_loss"] == pytest.approx(1.0)


def test_fedprox_sends_mu_and_fedmedian_takes_the_median() -> None:
    sent = [np.zeros(a.shape, dtype=np.float32) for a in fm.initial_arrays(0)]
    replies = [([np.full(a.shape, v, dtype=np.float32) for a in sent], n) for v, n in ((1.0, 1.0), (2.0, 1.0), (10.0, 100.0))]
    _, _, seen = _known_round(make_strategy(StrategyConfig(name="fedprox", proximal_mu=0.3), 3), sent, replies)
    assert all(s["config"]["proximal-mu"] == pytest.approx(0.3) for s in seen)
    out, _, _ = _known_round(make_strategy(StrategyConfig(name="fedmedian"), 3), sent, replies)
    assert all(np.allclose(a, 2.0) for a in out)


def test_fedavgm_carries_server_momentum_across_rounds() -> None:
    """Every site moves every weight by +1 each round: FedAvg moves the global model by 1 per round,
    FedAvgM (server lr 1, momentum m) by 1 in round 1 and by 1 + m in round 2."""
    start = [np.zeros(a.shape, dtype=np.float32) for a in fm.initial_arrays(0)]

    def site_fn(i, received, config):
        return [a + 1.0 for a in received], {"num-examples": 10.0 * (i + 1), "train_loss": 1.0}

    for cfg, after_two in ((StrategyConfig(name="fedavg"), 2.0), (StrategyConfig(name="fedavgm", server_momentum=0.9), 2.9)):
        strategy, arrays = make_strategy(cfg, 3), start
        for r in (1, 2):
            arrays, _ = run_round(strategy, r, arrays, {"lr": 0.1}, site_fn, num_sites=3)
            if r == 1:
                assert all(np.allclose(a, 1.0) for a in arrays), cfg.name
        assert all(np.allclose(a, after_two, atol=1e-5) for a in arrays), (cfg.name, float(arrays[0].ravel()[0]))
    assert StrategyConfig(name="fedavgm", server_momentum=0.75).label == "fedavgm(m=0.75)"


def test_server_side_dp_clips_each_update() -> None:
    sent = [np.zeros(a.shape, dtype=np.float32) for a in fm.initial_arrays(0)]
    big = [([np.full(a.shape, 5.0, dtype=np.float32) for a in sent], 1.0) for _ in range(2)]
    cfg = StrategyConfig(name="fedavg", dp_clip_norm=1.0, dp_noise_multiplier=0.0)
    out, _, _ = _known_round(make_strategy(cfg, 2), sent, big)
    assert np.sqrt(sum((a.astype(np.float64) ** 2).sum() for a in out)) == pytest.approx(1.0, rel=1e-4)


# -- the artifact -------------------------------------------------------------------------

def test_artifact_round_trips_through_load_prior_and_the_default_learner(tmp_path: Path, small_site, norm) -> None:
    arrays, _ = fm.local_fit(fm.initial_arrays(0), small_site, epochs=2, lr=0.3, norm=norm, seed=0)
    metrics = fm.evaluate_arrays(arrays, small_site, norm, calibration=True)
    manifest = fm.write_prior_artifact(arrays, tmp_path / "p", "7", norm=norm, calibration=fm.calibration_from_histograms(metrics),
                                       strategy="fedavg", rounds=3)
    assert manifest.prior_version == "rul-mlp-v7" and manifest.training["strategy"] == "fedavg"
    prior = load_prior(tmp_path / "p", RulFeatures().schema(), cache=False)
    a, b = fm._forward(arrays, *fm._inputs(small_site.x, norm))
    np.testing.assert_allclose(prior.predict_many(small_site.x, "prior"), fm.CAP * a, atol=0.05)
    np.testing.assert_allclose(prior.predict_many(small_site.x, "twin"), fm.CAP * b, atol=0.05)
    learner = PriorTwin(prior=str(tmp_path / "p"))
    assert learner.prior_version == "rul-mlp-v7"
    p = learner.predict_interval(learner.observe_one({"s2": 642.0, "s3": 1590.0}))
    assert 0.0 <= p.lower <= p.value <= p.upper


def test_artifact_refuses_tampered_weights_and_wrong_shapes(tmp_path: Path, norm) -> None:
    fm.write_prior_artifact(fm.initial_arrays(0), tmp_path / "p", "1", norm=norm)
    weights = tmp_path / "p" / fm.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-40] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PriorMismatchError, match="sha256 mismatch"):
        load_prior(tmp_path / "p", cache=False)
    with pytest.raises(ValueError, match="shapes"):
        fm.write_prior_artifact(fm.initial_arrays(0)[:-1], tmp_path / "q", "1", norm=norm)


# -- the command --------------------------------------------------------------------------

def test_eval_federated_tiny_run_writes_the_json_keys_and_the_docs_section(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "federation.md"
    page.parent.mkdir()
    page.write_text("# Federation\n\nIntro.\n\n## Evaluation (twinstream eval federated)\n\nOLD-SECTION-TEXT\n\n## Not built\n\nkeep\n")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["federated", "--rounds", "2", "--epochs", "1", "--max-engines", "2", "--limit-test-engines", "5",
                                      "--strategies", "fedavg,fedprox", "--no-reference", "--json", str(out), "--docs", str(page.parent)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["federated"]) == {"fedavg", "fedprox(mu=0.01)"}
    for score in [report["centralized"], *report["federated"].values()]:
        assert np.isfinite(score["rmse"]) and np.isfinite(score["prior_only"]["rmse"]) and "phm_score" in score
    assert set(report["local_only"]) >= {"site-1", "site-2", "site-3", "site-4", "mean_rmse"}
    assert all(np.isfinite(report["local_only"][s]["rmse"]) for s in fm.site_names())
    assert report["budget"]["rounds"] == 2 and report["seconds"] > 0 and "rule" in report["split"]
    text = page.read_text()
    assert "Intro." in text and "## Not built\n\nkeep" in text and "OLD-SECTION-TEXT" not in text
    assert text.count("## Evaluation (twinstream eval federated)") == 1 and "| fedavg |" in text
    # Other seeds are tabled from their reports, never typed into the generator.
    other = {**report, "budget": {**report["budget"], "seed": 1}}
    section = section_markdown(report, [other])
    assert (f"| 1 | `{report['command']}` | {report['centralized']['rmse']:.2f} | {report['federated']['fedavg']['rmse']:.2f} | - | "
            f"{report['federated']['fedprox(mu=0.01)']['rmse']:.2f} | - | {report['local_only']['mean_rmse']:.2f} |") in section
    assert "Other seeds" not in section_markdown(report)
