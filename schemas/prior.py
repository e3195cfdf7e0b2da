"""PriorManifest: what a fleet prior artifact claims to be, checked before it is used.

Why a manifest: a twin that silently loads weights trained on other features (or a
truncated file) predicts garbage with full confidence. The manifest pins the weights'
sha256 and the exact feature schema (names, order, extractor parameters), so a loader
can refuse a mismatch with a message naming it.

>>> schema = FeatureSchema(extractor="rul-features", extractor_version="1",
...                        names=["s2_ew", "age"], params={"fast_span": 10})
>>> m = PriorManifest(family="rul-mlp", version="1", feature_schema=schema,
...                   training_data={"train_FD001.txt": "ab" * 32}, weights_file="weights.npz",
...                   weights_sha256="cd" * 32, target="rul", target_cap=125.0)
>>> m.prior_version, m.domain is None  # a manifest without training ranges (older artifacts) still loads
('rul-mlp-v1', True)
>>> m.model_copy(update={"domain": {"names": ["age"], "low": [0.0], "high": [400.0]}}).domain["high"]
[400.0]
>>> schema.fingerprint() == FeatureSchema.model_validate(schema.model_dump()).fingerprint()
True
>>> schema.differences(schema.model_copy(update={"names": ["age", "s2_ew"]}))  # artifact vs learner
['names differ: artifact has 2 features starting [s2_ew, age], learner expects 2 starting [age, s2_ew]']
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

MANIFEST_FILE = "manifest.json"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class FeatureSchema(BaseModel):
    """The input a prior expects: produced by which extractor, with which parameters, in which order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extractor: str = Field(description="Name of the feature extractor (e.g. 'rul-features').")
    extractor_version: str
    names: list[str] = Field(min_length=1, description="Feature names in the order of the weights' input.")
    params: dict[str, float | int | str | list[str]] = Field(default_factory=dict, description="Extractor parameters.")

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form: equal schemas have equal fingerprints."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def differences(self, expected: FeatureSchema) -> list[str]:
        """Human-readable reasons why this (artifact) schema is not ``expected`` (the learner's)."""
        problems: list[str] = []
        if (self.extractor, self.extractor_version) != (expected.extractor, expected.extractor_version):
            problems.append(
                f"extractor differs: artifact has {self.extractor} v{self.extractor_version}, "
                f"learner expects {expected.extractor} v{expected.extractor_version}"
            )
        if self.names != expected.names:
            missing = [n for n in expected.names if n not in self.names]
            extra = [n for n in self.names if n not in expected.names]
            detail = []
            if missing:
                detail.append(f"missing {missing[:5]}")
            if extra:
                detail.append(f"unexpected {extra[:5]}")
            if not detail:
                detail.append(
                    f"artifact has {len(self.names)} features starting [{', '.join(self.names[:2])}], "
                    f"learner expects {len(expected.names)} starting [{', '.join(expected.names[:2])}]"
                )
            problems.append("names differ: " + "; ".join(detail))
        if self.params != expected.params:
            keys = sorted(k for k in set(self.params) | set(expected.params) if self.params.get(k) != expected.params.get(k))
            problems.append(f"extractor params differ: {', '.join(keys)}")
        return problems


class PriorManifest(BaseModel):
    """Manifest of a fleet prior artifact (a directory: ``manifest.json`` + weights file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = Field(description="Model family, e.g. 'rul-mlp'.")
    version: str = Field(description="Version of this artifact within the family.")
    created: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    feature_schema: FeatureSchema
    training_data: dict[str, str] = Field(description="File name -> sha256 of every file the prior was trained on.")
    weights_file: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Weights file name inside the artifact directory.")
    weights_sha256: str = Field(pattern=SHA256_PATTERN)
    target: str = Field(description="What the prior predicts, e.g. 'rul'.")
    target_cap: float | None = Field(default=None, description="Training targets were capped at this value.")
    prior_inputs: list[str] = Field(
        default_factory=list, description="Features the stateless prior head reads (a subset of the schema); the twin head reads all."
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="Validation metrics measured when trained.")
    calibration: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Split-conformal |residual| quantiles: 'edges' (predicted-value bins), '<head>_halfwidth' per bin.",
    )
    training: dict[str, float | int | str] = Field(default_factory=dict, description="Training hyperparameters.")
    domain: dict[str, Any] | None = Field(
        default=None,
        description="Ranges of the training features (models.domain.DomainBounds.to_manifest(): names, low, high, "
                    "max_outside); an input outside them is out of the prior's domain. None: not recorded (older artifacts).",
    )
    forecast_tasks: list[str] = Field(
        default_factory=list,
        description="Forecast task keys ('metric@horizon') whose forecast priors the weights file holds, as arrays "
                    "'forecast.<key>.<name>' (models.forecast_prior.forecast_prior_arrays).",
    )

    @field_validator("domain")
    @classmethod
    def _domain_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        missing = [k for k in ("names", "low", "high") if k not in value]
        if missing:
            raise ValueError(f"domain lacks {', '.join(missing)}")
        n = len(value["names"])
        if len(value["low"]) != n or len(value["high"]) != n:
            raise ValueError(f"domain has {n} names but {len(value['low'])} low and {len(value['high'])} high bounds")
        return value

    @property
    def prior_version(self) -> str:
        return f"{self.family}-v{self.version}"
