"""Scarcity curve: engine draws, the trajectory generators, the augmentation, the gate, and that nothing leaks across engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinstream.datasets import cmapss
from twinstream.evaluation import scarcity
from twinstream.evaluation.synth_rul_tasks import engines
from twinstream.models import discriminative
from twinstream.models.trajectory_gen import TrajectoryModel


def test_draws_are_seeded_distinct_and_k_sized() -> None:
    units = list(range(1, 101))
    a = scarcity.draw_units(units, 5, 0, 0)
    assert a == scarcity.draw_units(units, 5, 0, 0) and len(set(a)) == 5
    assert a != scarcity.draw_units(units, 5, 1, 0)
    assert scarcity.draw_units(units, None, 2, 0) == units


def test_training_budget_is_steps_not_epochs() -> None:
    for rows in (500, 5_000, 60_000):
        epochs = scarcity.epochs_for(rows, folds=3, steps=400)
        per_epoch = -(-rows * 2 // 3 // scarcity.BATCH)
        assert 400 <= epochs * max(per_epoch, 1) < 400 + max(per_epoch, 1) * 2


def test_generated_engines_look_like_the_real_ones_they_came_from() -> None:
    fd = cmapss.load_subset("FD001")
    e = engines(fd.train, np.zeros(14), np.ones(14))
    raw = [e.series[u] for u in (3, 17, 40, 66, 90)]
    stacked = np.vstack(raw)
    z = [(r - stacked.mean(axis=0)) / stacked.std(axis=0) for r in raw]
    fake = TrajectoryModel.fit(z).sample(30, np.random.default_rng(0))
    real_start = np.mean([s[:10].mean(axis=0) for s in z], axis=0)
    real_end = np.mean([s[-10:].mean(axis=0) for s in z], axis=0)
    fake_start = np.mean([s[:10].mean(axis=0) for s in fake], axis=0)
    fake_end = np.mean([s[-10:].mean(axis=0) for s in fake], axis=0)
    assert np.abs(fake_start - real_start).mean() < 0.3 and np.abs(fake_end - real_end).mean() < 0.4
    real_noise = np.mean([np.diff(s, axis=0).std(axis=0) for s in z], axis=0)
    fake_noise = np.mean([np.diff(s, axis=0).std(axis=0) for s in fake], axis=0)
    assert np.allclose(fake_noise, real_noise, rtol=0.15)
    assert 0.7 < np.mean([len(s) for s in fake]) / np.mean([len(s) for s in z]) < 1.3


def test_jitter_keeps_length_and_stays_near_its_source() -> None:
    series = [np.cumsum(np.ones((50, 3)), axis=0)]
    out = scarcity.jitter(series, 4, np.random.default_rng(0))
    assert all(o.shape == (50, 3) for o in out)
    assert all(np.abs(o - series[0]).mean() < 3.0 for o in out) and not any(np.allclose(o, series[0]) for o in out)


def test_each_draw_fits_its_generator_on_its_own_engines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    fitted: list[list[int]] = []
    real_fit = TrajectoryModel.fit

    def spy(series):  # record which engines the generator saw, by their lengths
        fitted.append(sorted(len(s) for s in series))
        return real_fit(series)

    deep: list[list[int]] = []
    real_deep = scarcity.train_trajectory_generator

    def deep_spy(out, entities, sensors, **kwargs):  # the deep generator's training entities, by their lengths
        deep.append(sorted(len(s) for s in entities.values()))
        return real_deep(out, entities, sensors, **kwargs)

    monkeypatch.setattr(scarcity.TrajectoryModel, "fit", staticmethod(spy))
    monkeypatch.setattr(scarcity, "train_trajectory_generator", deep_spy)
    monkeypatch.setattr(discriminative, "MIN_STEPS", 60)  # the real classifier, fewer steps: wiring, not accuracy
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = scarcity.evaluate_scarcity(ks=(3,), draws=1, steps=10, generator_steps=20, gate_splits=1)
    finally:
        torch.set_num_threads(threads)
    units = report["curve"]["3"]["units"][0]
    life = cmapss.load_subset("FD001").train_life
    assert fitted == [sorted(life[u] for u in units)] and deep == fitted
    row = report["curve"]["3"]
    assert row["train_engines"] == 3 and row["extra_engines"] == 6
    for arm in scarcity.ARMS:
        assert np.isfinite(row[arm]["rmse"]["mean"]) and len(row[arm]["rmse"]["draws"]) == 1
    gate = row["diffusion_gate"][0]
    assert {"discriminative_score", "tstr_ratio", "refused"} <= set(gate) and row["refused"] == int(bool(gate["refused"]))
    same = "real" if gate["refused"] else "real_diffusion_ungated"  # a refused generator leaves the prior on real engines
    assert row["real_diffusion"]["rmse"]["draws"] == row[same]["rmse"]["draws"]


def test_the_page_reports_the_diffusion_gate_and_a_refusal_as_no_change() -> None:
    from twinstream.evaluation import scarcity_docs

    def arm(values: list[float]) -> dict:
        return {m: {"mean": float(np.mean(values)), "std": float(np.std(values)), "draws": values} for m in ("rmse", "phm_score")}

    gate = {"discriminative_score": 0.4, "tstr_ratio": 2.5, "baseline_tstr_ratio": 1.3, "refused": "tstr_ratio 2.5 > 1.5"}
    row = {
        "real": arm([20.0, 22.0]),
        "real_synthetic": arm([21.0, 23.0]),
        "real_jitter": arm([19.0, 21.0]),
        "real_diffusion": arm([20.0, 22.0]),
        "real_diffusion_ungated": arm([24.0, 25.0]),
        "train_engines": 3,
        "extra_engines": 6,
        "diffusion_gate": [gate, gate],
        "refused": 2,
    }
    protocol = {
        "draws": 2,
        "units_rng": "r",
        "folds": 3,
        "steps_per_member": 400,
        "extra_per_real": 2,
        "scale_sd": 0.1,
        "jitter_sd": 0.1,
        "generator_steps": 800,
        "gate_splits": 3,
        "diffusion_gate_reference": "the k engines",
        "diffusion_gate": {"max_discriminative": 0.25, "max_tstr_ratio": 1.5},
    }
    report = {
        "curve": {"3": row},
        "protocol": protocol,
        "subset": "FD001",
        "test_engines": 100,
        "seconds": 60.0,
        "command": "twinstream eval scarcity --subset FD001",
    }
    text = scarcity_docs.section(report)
    assert "refused in 2 of 2 draws" in text and "same (all refused)" in text
    assert "| 3 | 2/2 | 0.40 (0.40-0.40) | 2.50 (2.50-2.50) | 1.30 |" in text
    assert "the diffusion trajectories help in every draw at no k and hurt in every draw at k = 3" in " ".join(text.split())
    del row["real_diffusion"], row["real_diffusion_ungated"]
    assert "diffusion" not in scarcity_docs.section(report)  # reports from before the arm render as they did
