"""A small conditional denoising diffusion model for the residuals of a sensor window (torch).

Why residuals: the Kalman trend (see :mod:`twinstream.models.generator`) already carries
each entity's level across a gap; what a deterministic fill lacks is the sensor noise
and whatever the trend gets systematically wrong. So the model generates
``x0 = window - trend`` at the missing positions, conditioned (CSDI-style) on the
observed residuals, the mask, the trend level (entity context: where this entity is on
its degradation path, also for sensors missing over the whole window) and the trend's
log variance (how far from an observation a position is).

Network: 1-D convolutions over time (dilations 1, 2, 4, 8 with residual connections)
plus a diffusion-step embedding. Residuals are divided by each sensor's noise scale
(the Kalman ``sqrt(r)``), and the network's output ``F`` enters the ``x0`` prediction as
``x0 = sqrt(abar_t) x_t + sqrt(1 - abar_t) F``: the exact posterior mean for unit white
noise plus a learned correction (a skip parametrisation as in EDM). So an untrained
network already samples Gaussian noise of the right scale, and training learns how the
residual departs from that; without the skip, an x0-predicting network regresses its
samples to the mean and they come out too smooth (measured: half the noise, caught by
the discriminative classifier). The prediction from pure noise is the conditional mean,
the point estimate, in one pass. Sampling is ancestral DDPM with CSDI's quadratic
schedule (``steps`` = 50) and reverse variance ``beta_t``.

>>> import torch
>>> torch.manual_seed(0) and None
>>> d = Denoiser(ResidualNet(dims=3, channels=8), steps=10, scale=np.array([1.0, 2.0, 0.5]))
>>> w = np.zeros((12, 3)); w[4:8] = np.nan
>>> lv, var = np.zeros((12, 3)), np.ones((12, 3))
>>> s = d.sample([w], [lv], [var], 2, np.random.default_rng(0))[0]
>>> s.shape, bool(np.isfinite(s).all()), bool((s[:, :4] == 0).all())
((2, 12, 3), True, True)
>>> Denoiser.from_arrays(d.to_arrays(), steps=10).to_arrays()["conv_in.weight"].shape
(8, 15, 1)
>>> big = d.sample([np.full((400, 3), np.nan)], [np.zeros((400, 3))], [np.ones((400, 3))], 1, np.random.default_rng(1))[0]
>>> bool(np.allclose(big[0].std(axis=0), [1.0, 2.0, 0.5], rtol=0.1))  # untrained: white noise of each sensor's scale
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

CONDITIONS = 4  # observed residual, mask, level, log variance


def schedule(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSDI's quadratic beta schedule from 1e-4 to 0.5 over ``steps``: (betas, cumulative alphas)."""
    betas = torch.linspace(1e-4 ** 0.5, 0.5 ** 0.5, steps, dtype=torch.float64) ** 2
    return betas, torch.cumprod(1.0 - betas, 0)


class ResidualNet(nn.Module):
    """x0-prediction network: (noisy residual, conditions, step) -> residual, per position."""

    def __init__(self, dims: int, channels: int = 48, dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        self.dims, self.channels, self.dilations = dims, channels, dilations
        self.conv_in = nn.Conv1d(dims * (1 + CONDITIONS), channels, 1)
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
        """``x`` (B, D, T) noisy residual (0 where observed), ``cond`` (B, 4D, T), ``t`` (B,) -> x0 (B, D, T)."""
        h = self.conv_in(torch.cat([x, cond], dim=1)) + self.step_proj(self.embed(t))[:, :, None]
        for conv, mix in zip(self.blocks, self.mix):
            a, b = conv(torch.relu(h)).chunk(2, dim=1)
            h = h + mix(torch.tanh(a) * torch.sigmoid(b)) / math.sqrt(2.0)
        return self.conv_out(torch.relu(h))


def conditions(windows: list[np.ndarray], levels: list[np.ndarray], variances: list[np.ndarray],
               scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack windows of one length into (cond (B, 4D, T) float32, missing (B, D, T) bool); residuals / ``scale``."""
    y = np.stack(windows)
    level = np.stack(levels)
    missing = np.isnan(y)
    observed_res = np.where(missing, 0.0, y - level) / (1.0 if scale is None else scale)
    logvar = np.log(np.maximum(np.stack(variances), 1e-6))
    cond = np.concatenate([observed_res, (~missing).astype(float), level, logvar], axis=2)
    return cond.transpose(0, 2, 1).astype(np.float32), missing.transpose(0, 2, 1)


class Denoiser:
    """The trained network with its schedule: sampling and the point estimate on numpy windows."""

    def __init__(self, net: ResidualNet, steps: int = 50, scale: np.ndarray | None = None) -> None:
        self.net = net.eval()
        self.steps = steps
        self.betas, self.abar = schedule(steps)
        self.scale = np.ones(net.dims) if scale is None else np.asarray(scale, dtype=float)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        arrays["_shape"] = np.array([self.net.dims, self.net.channels, *self.net.dilations])
        arrays["_scale"] = self.scale
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], manifest: Any = None, steps: int | None = None) -> Denoiser:
        shape = [int(v) for v in arrays["_shape"]]
        net = ResidualNet(shape[0], shape[1], tuple(shape[2:]))
        net.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in arrays.items() if not k.startswith("_")})
        if manifest is not None and len(manifest.sensors) != net.dims:
            raise ValueError(f"network fills {net.dims} sensors, manifest lists {len(manifest.sensors)}")
        scale = np.asarray(arrays["_scale"], dtype=float) if "_scale" in arrays else None
        return cls(net, steps or (manifest.diffusion_steps if manifest is not None else 50), scale)

    def _groups(self, windows: list[np.ndarray]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            groups.setdefault(len(w), []).append(i)
        return groups

    @torch.no_grad()
    def _run(self, cond: np.ndarray, missing: np.ndarray, n: int, rng: np.random.Generator, mean_only: bool) -> np.ndarray:
        """(B, n, T, D) samples (or, with ``mean_only``, n x0-predictions from pure noise)."""
        b, d, steps_t = missing.shape
        c = torch.from_numpy(np.repeat(cond, n, axis=0))
        m = torch.from_numpy(np.repeat(missing, n, axis=0))
        x = torch.from_numpy(rng.standard_normal((b * n, d, steps_t)).astype(np.float32)) * m
        for t in range(self.steps - 1, -1, -1):
            tt = torch.full((b * n,), t, dtype=torch.long)
            x0 = predict_x0(self.net, x, c, tt, self.abar)
            if mean_only:
                x = x0
                break
            if t == 0:
                x = x0
                break
            abar, abar_prev, beta = float(self.abar[t]), float(self.abar[t - 1]), float(self.betas[t])
            mean = (math.sqrt(abar_prev) * beta / (1 - abar)) * x0 + (math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)) * x
            var = beta  # Ho et al.'s upper choice, exact for unit white noise (the lower one shrinks samples ~11 % at 50 steps)
            noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
            x = (mean + math.sqrt(var) * noise) * m
        out = (x * m).reshape(b, n, d, steps_t).permute(0, 1, 3, 2).double().numpy()
        return out * self.scale

    def _batched(self, windows: list[np.ndarray], levels: list[np.ndarray], variances: list[np.ndarray], n: int,
                 rng: np.random.Generator, mean_only: bool, batch: int = 256) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(windows)
        for idx in self._groups(windows).values():
            per = max(1, batch // max(1, n))
            for start in range(0, len(idx), per):
                part = idx[start:start + per]
                cond, missing = conditions([windows[i] for i in part], [levels[i] for i in part], [variances[i] for i in part],
                                           self.scale)
                res = self._run(cond, missing, n, rng, mean_only)
                for k, i in enumerate(part):
                    out[i] = res[k]
        return [o for o in out if o is not None]

    def sample(self, windows: list[np.ndarray], levels: list[np.ndarray], variances: list[np.ndarray], n: int,
               rng: np.random.Generator) -> list[np.ndarray]:
        """``n`` residual samples ``(n, T, D)`` per window (0 at observed positions)."""
        return self._batched(windows, levels, variances, n, rng, mean_only=False)

    def mean(self, windows: list[np.ndarray], levels: list[np.ndarray], variances: list[np.ndarray], draws: int,
             rng: np.random.Generator) -> list[np.ndarray]:
        """The conditional mean residual ``(T, D)`` per window: x0-predictions from ``draws`` pure-noise starts, averaged."""
        return [r.mean(axis=0) for r in self._batched(windows, levels, variances, draws, rng, mean_only=True)]


def predict_x0(net: ResidualNet, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Skip parametrisation: the unit-white-noise posterior mean ``sqrt(abar) x_t`` plus the network's correction."""
    a = abar[t].float()[:, None, None]
    return a.sqrt() * x + (1 - a).sqrt() * net(x, cond, t)


def train_step(net: ResidualNet, opt: torch.optim.Optimizer, abar: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor,
               missing: torch.Tensor, gen: torch.Generator) -> float:
    """One optimisation step: noise ``x0`` at a random step, predict it back, MSE over the missing positions."""
    b = x0.shape[0]
    t = torch.randint(0, len(abar), (b,), generator=gen)
    a = abar[t].float()[:, None, None]
    eps = torch.randn(x0.shape, generator=gen)
    m = missing.float()
    xt = (a.sqrt() * x0 + (1 - a).sqrt() * eps) * m
    pred = predict_x0(net, xt, cond, t, abar)
    loss = (((pred - x0) ** 2) * m).sum() / m.sum().clamp(min=1.0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())
