"""The discriminative score can tell what it should and cannot tell what it should not.

The data and fills are built here, independently of the code under test: white-noise
series, a fill that removes the noise (zeros), and a fill with fresh noise of the same
distribution.
"""

from __future__ import annotations

import numpy as np

from twinstream.models.discriminative import discriminative_score, paired_windows


def noise_series(n: int = 80, steps: int = 60, dims: int = 4, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(steps, dims)) for _ in range(n)]


def test_windows_cover_the_block_and_match_outside_it() -> None:
    series = noise_series(10)
    real, fake, owner = paired_windows(series, lambda masked: [np.nan_to_num(m, nan=99.0) for m in masked], draws=2, seed=0)
    assert real.shape == fake.shape == (20, 30, 4) and sorted(set(owner.tolist())) == list(range(10))
    filled_rows = (fake == 99.0).all(axis=2).sum(axis=1)
    assert (filled_rows == 10).all()  # the whole 10-sample block lies inside every window
    same = ~(fake == 99.0)
    np.testing.assert_array_equal(real[same], fake[same])


def test_identical_windows_score_zero() -> None:
    series = noise_series(40)
    out = discriminative_score(series, lambda masked: [s.copy() for s in series], draws=3, epochs=5)
    assert out["score"] < 0.05


def test_a_fill_that_removes_the_noise_is_caught() -> None:
    series = noise_series()
    out = discriminative_score(series, lambda masked: [np.nan_to_num(m, nan=0.0) for m in masked], draws=5, epochs=20)
    assert out["score"] > 0.3 and out["test_windows"] > 100


def test_fresh_noise_of_the_same_law_is_not_caught() -> None:
    series = noise_series()
    rng = np.random.default_rng(1)
    fill = lambda masked: [np.where(np.isnan(m), rng.normal(size=m.shape), m) for m in masked]  # noqa: E731
    out = discriminative_score(series, fill, draws=5, epochs=20)
    assert out["score"] < 0.1
