"""Discriminative score: can a classifier tell windows with synthetic fills from measured ones?

Protocol (``twinstream eval synth``). For ``draws`` seeded block masks (one 10-sample
block, all sensors, per series of at least 40 samples; ``default_rng([seed, 3, k])``),
a filler fills the masked series. Around each block a window of ``WINDOW`` samples is
cut at a seeded offset (the block anywhere inside it): from the filled series it is a
*synthetic* window, from the measured series at the same place a *real* one. Series are
split in two halves at random; a classifier is trained on the windows of one half and
its accuracy ``acc`` measured on the other, so it judges windows of entities it has
never seen. The score is ``|acc - 0.5|``: 0 when synthetic windows are
indistinguishable, 0.5 when every one is caught.

The classifier (a small 1-D CNN over values and first differences, max- and
mean-pooled over time, trained with Adam) is strong enough to catch what matters here:
deterministic fills remove the sensor noise inside the block, and it scores them near
0.5; windows that differ only in which noise draw they carry score near 0.

>>> rng = np.random.default_rng(0)
>>> series = [rng.normal(size=(60, 3)) for _ in range(40)]
>>> same = discriminative_score(series, lambda masked: [s.copy() for s in series], draws=2, epochs=5)
>>> same["score"] < 0.1
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twinstream.datasets.series import BLOCK, MIN_BLOCK_SERIES, block_mask

WINDOW = 30
MIN_STEPS = 600  # optimisation steps of the classifier at least (40 epochs of FD001's 960 training windows)
Filler = Callable[[list[np.ndarray]], list[np.ndarray]]


def paired_windows(truth: Sequence[np.ndarray], fill: Filler, draws: int, seed: int, window: int = WINDOW,
                   every: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real windows (N, W, D), synthetic windows (N, W, D), group (N,)) over ``draws`` masks.

    The group is the series index, or with fewer than four series (one CSV) the run of
    ``every`` samples the block fell in, so that the held-out half is still other data.
    """
    real, fake, owner = [], [], []
    for k in range(draws):
        rng = np.random.default_rng([seed, 3, k])
        masks = block_mask(truth, rng, every=every, length=BLOCK, min_length=max(MIN_BLOCK_SERIES, window))
        filled = fill([np.where(m, np.nan, s) for s, m in zip(truth, masks)])
        for i, (s, m, f) in enumerate(zip(truth, masks, filled)):
            step = every or len(s)
            for run in range(0, len(s), step):
                rows = run + np.flatnonzero(m[run:run + step].any(axis=1))
                if rows.size == 0:
                    continue
                lo = max(0, rows[-1] + 1 - window)
                hi = min(rows[0], len(s) - window)
                start = int(rng.integers(lo, hi + 1))
                if not np.isfinite(s[start:start + window]).all():
                    continue  # a value never measured: no real window to compare with
                real.append(s[start:start + window])
                fake.append(f[start:start + window])
                owner.append(i if len(truth) >= 4 else run // step)
    return np.array(real, dtype=np.float32), np.array(fake, dtype=np.float32), np.array(owner)


def _classifier(dims: int, channels: int = 32) -> Any:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv1d(2 * dims, channels, 3, padding=1), nn.ReLU(),
                nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(),
                nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(),
            )
            self.head = nn.Linear(2 * channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, W, D)
            diff = torch.diff(x, dim=1, prepend=x[:, :1])
            h = self.body(torch.cat([x, diff], dim=2).transpose(1, 2))
            return self.head(torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1)).squeeze(1)

    return Net()


def classify(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, epochs: int = 40,
             seed: int = 0, batch: int = 64) -> float:
    """Held-out accuracy of the CNN trained on (x_train, y_train)."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = _classifier(x_train.shape[2])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train.astype(np.float32))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    per_epoch = -(-len(xt) // batch)
    for _ in range(max(epochs, -(-MIN_STEPS // per_epoch))):  # small sets get more passes, never fewer steps
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch):
            idx = order[start:start + batch]
            loss = loss_fn(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = (net(torch.from_numpy(x_test)) > 0).numpy()
    return float((pred == (y_test > 0.5)).mean())


def discriminative_score(truth: Sequence[np.ndarray], fill: Filler, draws: int = 10, seed: int = 0,
                         epochs: int = 40, window: int = WINDOW, every: int | None = None) -> dict[str, Any]:
    """``{"score", "accuracy", "train_windows", "test_windows"}`` of one filler (see the module docstring)."""
    real, fake, owner = paired_windows(truth, fill, draws, seed, window, every)
    if len(real) == 0:
        raise ValueError(f"no series of at least {max(MIN_BLOCK_SERIES, window)} samples to cut windows from")
    if not np.isfinite(fake).all():
        raise ValueError("windows hold missing values: the filler left gaps")
    series = np.unique(owner)
    if len(series) < 2:
        raise ValueError("windows from fewer than two series (or runs): nothing to hold out")
    held_out = set(np.random.default_rng([seed, 4]).permutation(series)[: len(series) // 2].tolist())
    test = np.array([o in held_out for o in owner])
    x = np.concatenate([real, fake])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(fake))])
    t = np.concatenate([test, test])
    acc = classify(x[~t], y[~t], x[t], y[t], epochs=epochs, seed=seed)
    return {"score": abs(acc - 0.5), "accuracy": acc, "train_windows": int((~t).sum()), "test_windows": int(t.sum()),
            "draws": draws, "window": window, "rng": f"numpy default_rng([{seed}, 3, k]) for k < {draws}; split default_rng([{seed}, 4])"}


def compare(truth: Sequence[np.ndarray], fillers: dict[str, Filler], draws: int = 10, seed: int = 0, epochs: int = 40,
            every: int | None = None, progress: Callable[[str], None] = lambda _: None) -> dict[str, dict[str, Any]]:
    """:func:`discriminative_score` of each filler on the same windows, masks and split."""
    out = {}
    for name, fill in fillers.items():
        progress(f"discriminative score: {name}")
        out[name] = discriminative_score(truth, fill, draws=draws, seed=seed, epochs=epochs, every=every)
    return out
