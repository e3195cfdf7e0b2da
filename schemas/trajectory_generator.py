"""TrajectoryGeneratorManifest: what a whole-trajectory generator artifact claims, and its quality gate.

Why a separate manifest from :mod:`twinstream.schemas.generator`: a gap filler and a
generator of whole run-to-failure trajectories are judged by different evidence. A gap
filler is gated on its fill error; a trajectory generator feeds a prior's training set,
so it is gated on (1) whether a classifier tells its whole trajectories from real ones
(the discriminative score ``|accuracy - 0.5|``) and (2) TSTR: a RUL model trained on
synthetic trajectories and tested on real ones, relative to the same model trained on
real ones (``tstr_ratio`` = RMSE TSTR / RMSE TRTR). The prior trainer refuses an
artifact whose recorded numbers fail :class:`TrajectoryGateThresholds`.

>>> m = TrajectoryGeneratorManifest(family="trajectory-diffusion", version="1", sensors=["s2", "s3"],
...                                 mean=[1.0, 2.0], std=[0.5, 0.5], grid=64, lengths=[150, 200],
...                                 weights_file="weights.npz", weights_sha256="ab" * 32,
...                                 training_data={"unit 1": "cd" * 32},
...                                 gate={"discriminative_score": 0.1, "tstr_ratio": 1.2})
>>> m.generator_version
'trajectory-diffusion-v1'
>>> TrajectoryGateThresholds().failures(m.gate)
[]
>>> TrajectoryGateThresholds(max_tstr_ratio=1.1).failures(m.gate)
['tstr_ratio 1.2 > 1.1']
>>> TrajectoryGateThresholds().failures({"tstr_ratio": 1.0})
['discriminative_score not recorded']
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from twinstream.schemas.generator import DISCRIMINATIVE, GENERATOR_MANIFEST_FILE, SHA256_PATTERN, limit_failures

TRAJECTORY_MANIFEST_FILE = GENERATOR_MANIFEST_FILE
TSTR_RATIO = "tstr_ratio"


class TrajectoryGateThresholds(BaseModel):
    """Limits on a trajectory generator's recorded gate metrics (``None``: not checked).

    Defaults, fixed before any generator was measured: whole synthetic trajectories
    caught by the classifier at most 75 % of the time (score 0.25; whole trajectories
    carry more evidence than the 30-sample windows of the gap filler's 0.15 line), and a
    RUL model trained on them at most 1.5x the RMSE of one trained on real trajectories.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_discriminative: float | None = Field(
        default=0.25, ge=0, le=0.5, description="|accuracy - 0.5| of a real-vs-synthetic trajectory classifier."
    )
    max_tstr_ratio: float | None = Field(default=1.5, gt=0, description="RUL RMSE train-on-synthetic / train-on-real.")

    def failures(self, gate: dict[str, float]) -> list[str]:
        """Why recorded ``gate`` metrics fail these thresholds (empty: they pass)."""
        return limit_failures(gate, ((DISCRIMINATIVE, self.max_discriminative), (TSTR_RATIO, self.max_tstr_ratio)))


class TrajectoryGeneratorManifest(BaseModel):
    """Manifest of a trajectory generator artifact (a directory: ``manifest.json`` + weights file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = Field(description="Model family, e.g. 'trajectory-diffusion'.")
    version: str = Field(description="Version of this artifact within the family.")
    created: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    sensors: list[str] = Field(min_length=1, description="Column order of every generated trajectory.")
    mean: list[float] = Field(description="Per-sensor mean (raw units) of the training entities: trajectories are z-scored with it.")
    std: list[float] = Field(description="Per-sensor standard deviation (raw units) of the training entities.")
    grid: int = Field(ge=4, description="Points of the life-fraction grid the network generates on.")
    lengths: list[int] = Field(min_length=1, description="Lives (samples to failure) of the training entities.")
    diffusion_steps: int = Field(default=50, ge=1, description="Denoising steps.")
    weights_file: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Weights file name inside the artifact directory.")
    weights_sha256: str = Field(pattern=SHA256_PATTERN)
    training_data: dict[str, str] = Field(description="Training entity -> sha256 of its series (float64 bytes).")
    gate: dict[str, float] = Field(
        default_factory=dict, description="Gate metrics at training time (discriminative_score, tstr_ratio, ...)."
    )
    gate_reference: str = Field(
        default="training entities", description="Which real entities the gate compared against (held out or the training ones)."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="Other measured numbers (TSTR / TRTR RMSE, ...).")
    training: dict[str, float | int | str] = Field(default_factory=dict, description="Training hyperparameters.")

    @model_validator(mode="after")
    def _consistent(self) -> TrajectoryGeneratorManifest:
        if not len(self.sensors) == len(self.mean) == len(self.std):
            raise ValueError("sensors, mean and std need the same length")
        if any(not s > 0 for s in self.std):
            raise ValueError("std must be positive")
        if any(n < 2 for n in self.lengths):
            raise ValueError("training lives must have at least 2 samples")
        return self

    @property
    def generator_version(self) -> str:
        return f"{self.family}-v{self.version}"
