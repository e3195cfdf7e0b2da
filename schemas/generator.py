"""GeneratorManifest: what a gap-filling generator artifact claims to be, and its quality gate.

Why a manifest (mirrors :mod:`twinstream.schemas.prior`): a sidecar that silently loads
weights trained on other sensors or another normalization fills gaps with garbage that
is then flagged as trustworthy synthetic data. The manifest pins the weights' sha256,
the sensors in column order with their normalization, and the gate metrics measured on
held-out data when the artifact was trained. :class:`GateThresholds` decides whether
those recorded metrics are good enough to use the generator at all; a loader refuses an
artifact that fails them, naming the metric, and the caller falls back to the baseline.

>>> m = GeneratorManifest(family="llt-diffusion", version="1", sensors=["s2", "s3"], mean=[1.0, 2.0],
...                       std=[0.5, 0.5], window=64, weights_file="weights.npz", weights_sha256="ab" * 32,
...                       training_data={"train_FD001.txt": "cd" * 32},
...                       gate={"mae_ratio_block": 0.78, "discriminative_score": 0.04})
>>> m.generator_version
'llt-diffusion-v1'
>>> GateThresholds().failures(m.gate)
[]
>>> GateThresholds(max_mae_ratio=0.7).failures(m.gate)
['mae_ratio_block 0.78 > 0.7']
>>> GateThresholds().failures({"mae_ratio_block": 0.5})
['discriminative_score not recorded']
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

GENERATOR_MANIFEST_FILE = "manifest.json"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAE_RATIO = "mae_ratio_block"
DISCRIMINATIVE = "discriminative_score"


class GateThresholds(BaseModel):
    """Limits on the gate metrics recorded in a generator manifest (``None``: not checked).

    Defaults are the gate's targets: the point estimate's MAE at most 0.80 x linear
    interpolation's on the block mask, and a discriminative score of the samples of at
    most 0.15.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_mae_ratio: float | None = Field(default=0.8, gt=0, description="Generator MAE / linear-interpolation MAE, block mask.")
    max_discriminative: float | None = Field(default=0.15, ge=0, le=0.5, description="|accuracy - 0.5| of real-vs-synthetic classifier.")

    def failures(self, gate: dict[str, float]) -> list[str]:
        """Why recorded ``gate`` metrics fail these thresholds (empty: they pass)."""
        return limit_failures(gate, ((MAE_RATIO, self.max_mae_ratio), (DISCRIMINATIVE, self.max_discriminative)))


def limit_failures(gate: dict[str, float], limits: Iterable[tuple[str, float | None]]) -> list[str]:
    """Why ``gate``'s metrics fail upper ``limits`` (metric, limit or None: not checked); a missing or NaN metric fails.

    >>> limit_failures({"a": 0.3, "b": float("nan")}, [("a", 0.2), ("b", 1.0), ("c", None), ("d", 1.0)])
    ['a 0.3 > 0.2', 'b nan > 1', 'd not recorded']
    """
    out = []
    for key, limit in limits:
        if limit is None:
            continue
        value = gate.get(key)
        if value is None:
            out.append(f"{key} not recorded")
        elif not value <= limit:  # NaN fails too
            out.append(f"{key} {value:g} > {limit:g}")
    return out


class GeneratorManifest(BaseModel):
    """Manifest of a generator artifact (a directory: ``manifest.json`` + weights file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = Field(description="Model family, e.g. 'llt-diffusion' (Kalman trend + diffusion residual).")
    version: str = Field(description="Version of this artifact within the family.")
    created: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    sensors: list[str] = Field(min_length=1, description="Column order of every window the generator fills.")
    mean: list[float] = Field(description="Per-sensor training mean (raw units): windows are z-scored with it.")
    std: list[float] = Field(description="Per-sensor training standard deviation (raw units).")
    window: int = Field(ge=4, description="Length of the training windows (samples).")
    diffusion_steps: int = Field(default=0, ge=0, description="Denoising steps of the residual model (0: Gaussian residuals).")
    weights_file: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Weights file name inside the artifact directory.")
    weights_sha256: str = Field(pattern=SHA256_PATTERN)
    training_data: dict[str, str] = Field(description="File name -> sha256 of the data the generator was trained on.")
    gate: dict[str, float] = Field(
        default_factory=dict,
        description="Gate metrics measured on held-out data at training time (mae_ratio_block, discriminative_score, ...).",
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="Other held-out metrics (MAE per method and mask, ...).")
    training: dict[str, float | int | str] = Field(default_factory=dict, description="Training hyperparameters and data split.")

    @model_validator(mode="after")
    def _same_length(self) -> GeneratorManifest:
        if not len(self.sensors) == len(self.mean) == len(self.std):
            raise ValueError("sensors, mean and std need the same length")
        if any(not s > 0 for s in self.std):
            raise ValueError("std must be positive")
        return self

    @property
    def generator_version(self) -> str:
        return f"{self.family}-v{self.version}"
