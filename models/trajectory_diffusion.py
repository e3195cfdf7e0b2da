"""A denoising diffusion generator of whole run-to-failure trajectories (torch, CPU-cheap).

Why this decomposition: entities live for different numbers of cycles, and a network
needs fixed-size inputs. So each z-scored training life ``(T, D)`` becomes its *course*:
the means of ``GRID`` equal bins of life fraction (bin ``b`` holds cycles ``t`` with
``t * GRID // T == b``), and its *noise*: what is left around that course, whose
per-sensor standard deviation is fitted once (cycle-to-cycle sensor noise is close to
white in run-to-failure data; a diffusion model of 200 noisy cycles per entity would
have to learn that from a handful of examples). A new trajectory is: a life ``T`` drawn
from the training lives with a log-normal spread, a course drawn from the diffusion
model *given* ``log T`` (long and short lives degrade differently), linearly upsampled
to ``T`` cycles, plus Gaussian noise of the fitted size. Its label comes with it: it
fails at its last cycle.

Conditioning on an entity's early life: the first ``m`` cycles of a real entity fix the
course bins they cover completely (for a drawn ``T > m``); the network was trained with
random observed prefixes of the course (CSDI-style: observed values and their mask are
inputs, the loss covers the other bins only), so it completes the course; the returned
trajectory keeps the given ``m`` cycles unchanged.

Network: 1-D convolutions over the grid (dilations 1..16, gated residual blocks as in
:mod:`twinstream.models.diffusion`), with the life-fraction position and ``log T`` as
input channels; epsilon prediction with the quadratic schedule of
:func:`twinstream.models.diffusion.schedule`; ancestral sampling.

>>> threads = torch.get_num_threads(); torch.set_num_threads(1)  # shared cores: one thread is faster here
>>> rng = np.random.default_rng(0)
>>> lives = [np.column_stack([np.exp(-(n - np.arange(1, n + 1)) / 30.0) * 3 + rng.normal(0, 0.2, n)] * 2)
...          for n in (150, 200, 180)]
>>> model = TrajectoryDiffusion.fit(lives, steps=20, seed=0)
>>> fake = model.sample(2, np.random.default_rng(1))
>>> [f.shape[1] for f in fake], all(len(f) >= MIN_LENGTH for f in fake)
([2, 2], True)
>>> cont = model.sample(1, np.random.default_rng(2), prefix=lives[0][:60])[0]
>>> bool((cont[:60] == lives[0][:60]).all()), len(cont) > 60
(True, True)
>>> again = TrajectoryDiffusion.from_arrays(model.to_arrays())
>>> bool(np.allclose(again.sample(1, np.random.default_rng(3))[0], model.sample(1, np.random.default_rng(3))[0]))
True
>>> torch.set_num_threads(threads)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from twinstream.models.diffusion import schedule

GRID = 64
DIFFUSION_STEPS = 50
TRAIN_STEPS = 800  # gradient steps whatever the number of training entities (the budget)
BATCH = 32
LR = 5e-3
LENGTH_SPREAD = 0.1  # sd of log life around a training life (as the baseline generator)
MIN_LENGTH = 20
MIN_REMAINING = 5  # cycles a continuation adds at least after the given prefix
CONDITIONAL_SHARE = 0.5  # training examples that see an observed prefix of the course
CLIP = 6.0  # x0 estimates are clipped to this many z units while sampling


def course(series: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Means of ``grid`` equal life-fraction bins, ``(grid, D)`` (empty bins of short lives interpolated).

    >>> course(np.arange(8.0)[:, None], 4)[:, 0].tolist()
    [0.5, 2.5, 4.5, 6.5]
    """
    return _bin_means(series, len(series), grid)


def _bin_means(rows: np.ndarray, life: int, grid: int) -> np.ndarray:
    """Bin means of the first ``len(rows)`` cycles of a life of ``life`` cycles (NaN: bin not reached)."""
    rows = np.asarray(rows, dtype=float)
    idx = np.arange(len(rows)) * grid // life
    sums = np.zeros((grid, rows.shape[1]))
    counts = np.zeros(grid)
    np.add.at(sums, idx, rows)
    np.add.at(counts, idx, 1.0)
    out = np.full((grid, rows.shape[1]), np.nan)
    seen = counts > 0
    out[seen] = sums[seen] / counts[seen, None]
    if len(rows) == life and not seen.all():
        at = np.flatnonzero(seen)
        out = np.column_stack([np.interp(np.arange(grid), at, out[at, d]) for d in range(rows.shape[1])])
    return out


def upsample(curve: np.ndarray, life: int) -> np.ndarray:
    """``(life, D)``: the course interpolated linearly between bin centres (cycle coordinates)."""
    grid = len(curve)
    centres = np.array(
        [
            np.mean(np.flatnonzero(np.arange(life) * grid // life == b)) if life >= grid else (b + 0.5) * life / grid - 0.5
            for b in range(grid)
        ]
    )
    t = np.arange(life, dtype=float)
    return np.column_stack([np.interp(t, centres, curve[:, d]) for d in range(curve.shape[1])])


class CourseNet(nn.Module):
    """x0 prediction: (noisy course, observed course, mask, log life, position, step) -> clean course."""

    def __init__(self, dims: int, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4, 8, 16)) -> None:
        super().__init__()
        self.dims, self.channels, self.dilations = dims, channels, dilations
        self.conv_in = nn.Conv1d(3 * dims + 2, channels, 1)
        self.step_proj = nn.Linear(32, channels)
        self.blocks = nn.ModuleList(nn.Conv1d(channels, 2 * channels, 3, padding=d, dilation=d) for d in dilations)
        self.mix = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in dilations)
        self.conv_out = nn.Conv1d(channels, dims, 1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def embed(t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(1000.0) * torch.arange(16, dtype=torch.float32) / 16)
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` (B, D, G), ``cond`` (B, 2D + 2, G), ``t`` (B,) -> predicted clean course (B, D, G)."""
        h = self.conv_in(torch.cat([x, cond], dim=1)) + self.step_proj(self.embed(t))[:, :, None]
        for conv, mix in zip(self.blocks, self.mix):
            a, b = conv(torch.relu(h)).chunk(2, dim=1)
            h = h + mix(torch.tanh(a) * torch.sigmoid(b)) / math.sqrt(2.0)
        return self.conv_out(torch.relu(h))


def _cond(observed: np.ndarray, mask: np.ndarray, log_life: np.ndarray) -> np.ndarray:
    """(B, 2D + 2, G) float32 from observed courses (B, G, D, 0 where unobserved), masks and normalised log lives."""
    b, g, _ = observed.shape
    pos = np.broadcast_to(np.linspace(0.0, 1.0, g)[None, :, None], (b, g, 1))
    life = np.broadcast_to(log_life[:, None, None], (b, g, 1))
    cond = np.concatenate([observed * mask, mask, life, pos], axis=2)
    return cond.transpose(0, 2, 1).astype(np.float32)


@dataclass
class TrajectoryDiffusion:
    """Trained course network plus the fitted lives and noise (see the module doc)."""

    net: CourseNet
    lengths: np.ndarray  # (E,) training lives
    noise_sd: np.ndarray  # (D,) sd around the course
    log_life_mean: float
    log_life_sd: float
    steps: int = DIFFUSION_STEPS

    def __post_init__(self) -> None:
        self.net.eval()
        self.betas, self.abar = schedule(self.steps)

    @property
    def grid(self) -> int:
        return GRID

    def _norm_life(self, life: np.ndarray) -> np.ndarray:
        return (np.log(life) - self.log_life_mean) / self.log_life_sd

    @staticmethod
    def fit(series: Sequence[np.ndarray], steps: int = TRAIN_STEPS, seed: int = 0, channels: int = 32) -> TrajectoryDiffusion:
        """Train on whole z-scored run-to-failure series ``(T_e, D)`` (last row = failure), nothing else."""
        series = [np.asarray(s, dtype=float) for s in series]
        if not series:
            raise ValueError("no training entities")
        dims = series[0].shape[1]
        courses = np.stack([course(s) for s in series])  # (E, G, D)
        residuals = np.vstack([s - upsample(c, len(s)) for s, c in zip(series, courses)])
        noise_sd = residuals.std(axis=0)
        lengths = np.array([len(s) for s in series])
        log_life = np.log(lengths)
        model = TrajectoryDiffusion(CourseNet(dims, channels), lengths, noise_sd, float(log_life.mean()), max(float(log_life.std()), 0.1))
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng([seed, 11])
        net = model.net.train()
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        norm_life = model._norm_life(lengths)
        for _ in range(steps):
            pick = rng.integers(len(series), size=BATCH)
            x0 = courses[pick]
            cut = np.where(rng.random(BATCH) < CONDITIONAL_SHARE, rng.integers(GRID // 10, int(0.8 * GRID), BATCH), 0)
            mask = (np.arange(GRID)[None, :] < cut[:, None]).astype(float)[:, :, None] * np.ones((1, 1, dims))
            cond = torch.from_numpy(_cond(x0, mask, norm_life[pick]))
            target = torch.from_numpy((1.0 - mask).transpose(0, 2, 1).astype(np.float32))
            x0_t = torch.from_numpy(x0.transpose(0, 2, 1).astype(np.float32))
            t = torch.randint(0, model.steps, (BATCH,), generator=gen)
            a = model.abar[t].float()[:, None, None]
            eps = torch.randn(x0_t.shape, generator=gen)
            xt = (a.sqrt() * x0_t + (1 - a).sqrt() * eps) * target
            loss = (((net(xt, cond, t) - x0_t) ** 2) * target).sum() / target.sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.net.eval()
        return model

    @torch.no_grad()
    def _courses(self, observed: np.ndarray, mask: np.ndarray, lives: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sampled courses (B, G, D); observed bins kept."""
        b, g, d = observed.shape
        cond = torch.from_numpy(_cond(np.nan_to_num(observed), mask, self._norm_life(lives)))
        target = torch.from_numpy((1.0 - mask).transpose(0, 2, 1).astype(np.float32))
        x = torch.from_numpy(rng.standard_normal((b, d, g)).astype(np.float32)) * target
        for t in range(self.steps - 1, -1, -1):
            tt = torch.full((b,), t, dtype=torch.long)
            abar, beta = float(self.abar[t]), float(self.betas[t])
            x0 = self.net(x, cond, tt).clamp(-CLIP, CLIP)
            if t == 0:
                x = x0
                break
            abar_prev = float(self.abar[t - 1])
            mean = (math.sqrt(abar_prev) * beta / (1 - abar)) * x0 + (math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)) * x
            x = (mean + math.sqrt(beta) * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))) * target
        out = (x * target).permute(0, 2, 1).double().numpy()
        return np.where(mask > 0, np.nan_to_num(observed), out)

    def _life(self, rng: np.random.Generator, at_least: int) -> int:
        for _ in range(50):
            life = int(round(self.lengths[int(rng.integers(len(self.lengths)))] * np.exp(rng.normal(0.0, LENGTH_SPREAD))))
            if life >= at_least:
                return life
        return at_least

    def sample(self, n: int, rng: np.random.Generator, prefix: np.ndarray | None = None) -> list[np.ndarray]:
        """``n`` run-to-failure trajectories ``(T, D)`` in the training z units (last row = failure).

        With ``prefix`` (an entity's first ``m`` cycles, z units) every trajectory starts
        with exactly those cycles and continues them to a failure at least
        ``MIN_REMAINING`` cycles later.
        """
        dims = len(self.noise_sd)
        m = 0 if prefix is None else len(prefix)
        lives = np.array([self._life(rng, max(MIN_LENGTH, m + MIN_REMAINING if m else MIN_LENGTH)) for _ in range(n)])
        observed = np.zeros((n, GRID, dims))
        mask = np.zeros((n, GRID, dims))
        if prefix is not None:
            for i, life in enumerate(lives):
                bins = _bin_means(prefix, int(life), GRID)
                full = (np.arange(GRID) + 1) * life <= m * GRID  # every cycle of the bin is in the prefix
                full &= np.isfinite(bins).all(axis=1)
                observed[i, full] = bins[full]
                mask[i, full] = 1.0
        courses = self._courses(observed, mask, lives.astype(float), rng)
        out = []
        for c, life in zip(courses, lives):
            traj = upsample(c, int(life)) + rng.normal(0.0, 1.0, (int(life), dims)) * self.noise_sd
            if prefix is not None:
                traj[:m] = prefix
            out.append(traj)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to sample again, as plain arrays (the artifact's weights file)."""
        arrays = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        arrays["shape"] = np.array([self.net.dims, self.net.channels, *self.net.dilations])
        arrays["lengths"] = self.lengths.astype(np.int64)
        arrays["noise_sd"] = self.noise_sd.astype(np.float64)
        arrays["log_life"] = np.array([self.log_life_mean, self.log_life_sd])
        arrays["steps"] = np.array([self.steps])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TrajectoryDiffusion:
        shape = [int(v) for v in arrays["shape"]]
        net = CourseNet(shape[0], shape[1], tuple(shape[2:]))
        net.load_state_dict({k[4:]: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in arrays.items() if k.startswith("net.")})
        log_life = np.asarray(arrays["log_life"], dtype=float)
        return cls(
            net,
            np.asarray(arrays["lengths"]),
            np.asarray(arrays["noise_sd"], dtype=float),
            float(log_life[0]),
            float(log_life[1]),
            int(arrays["steps"][0]),
        )
