"""The run config of a federated round: one table of defaults, parsed into validated settings.

Defaults of rounds, local epochs and learning rate are the recipe's
(:mod:`twinstream.federation.recipe`, which ``twinstream eval federated`` measures; the
table is in ``docs/federation.md``); the local step's other options (``local.*``) default
to ``local_fit``'s own.

Why one table (:data:`RUN_CONFIG_DEFAULTS`): Flower only accepts ``flwr run -c`` overrides
for keys present in the App's ``[tool.flwr.app.config]``, which
:func:`~twinstream.federation.runtime.write_app_dir` generates from this table, and the
ServerApp parses the same keys back (:meth:`RoundConfig.from_run_config`). Strategy
options are the fields of :class:`~twinstream.federation.strategies.StrategyConfig`
under ``strategy.`` (dashes for underscores); TOML has no null, so the optional ones
use 0 for "unset" (``strategy.dp-clip-norm = 0`` = no DP, ``strategy.min-nodes = 0`` =
every connected site).

A round for a declared kind carries the kind (``kind-spec``: its ``twins.yaml`` entry as
JSON, written by ``federation round --spec --kind``) and the label cap (``target-cap``);
its family defaults to the kind's ``prior: {registry: FAMILY}`` (else the kind's name).

No secret is ever part of the run config (Flower stores it with the run): the publish
token comes from the ServerApp's environment, ``TWINSTREAM_REGISTRY_PUBLISH_TOKEN``.

>>> cfg = RoundConfig.from_run_config({**RUN_CONFIG_DEFAULTS, "strategy.name": "fedprox", "strategy.dp-clip-norm": 0.0})
>>> cfg.strategy.name, cfg.strategy.dp_clip_norm, cfg.num_server_rounds == RUN_CONFIG_DEFAULTS["num-server-rounds"]
('fedprox', None, True)
>>> toml_value("a'b"), toml_value(True), toml_value(0.5)
('"a\\'b"', 'true', '0.5')
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from twinstream.federation.recipe import RECIPE, federated_rounds
from twinstream.federation.strategies import StrategyConfig
from twinstream.models.federated_data import FeatureLayout
from twinstream.schemas.twin_spec import KindSpec

STRATEGY_PREFIX = "strategy."
LOCAL_PREFIX = "local."
_OPTIONAL_ZERO = {"dp_clip_norm": 0.0, "min_nodes": 0}  # None <-> 0 in the run config
# local_fit parameters that are not recipe options (set per message, or the site's business)
_NOT_LOCAL_OPTIONS = {"arrays", "data", "epochs", "lr", "proximal_mu", "seed", "norm", "threads"}


def local_fit_options() -> dict[str, str | int | float | bool]:
    """The local step's other keyword options and their defaults (``local_fit``'s signature: one source).

    They are run-config keys ``local.<name>`` (dashes) that the ServerApp sends with every
    training message and the ClientApp passes to ``local_fit``.
    """
    import inspect

    from twinstream.models.federated import local_fit

    return {name: p.default for name, p in inspect.signature(local_fit).parameters.items()
            if name not in _NOT_LOCAL_OPTIONS and isinstance(p.default, (str, int, float, bool))}

def _recipe() -> tuple[int, int, float, bool, int]:
    """Rounds, local epochs, learning rate, equal-steps flag and fixed local steps (0 = none) of the recipe
    (:data:`~twinstream.federation.recipe.RECIPE`): its federated rounds, and with fixed local steps (the same
    count at every site, so equal steps by construction) equal-steps off."""
    fixed = RECIPE.local_steps if RECIPE.equal_steps else 0
    return federated_rounds(RECIPE), RECIPE.epochs, RECIPE.lr, RECIPE.equal_steps and not fixed, fixed


_ROUNDS, _EPOCHS, _LR, _EQUAL_STEPS, _LOCAL_STEPS = _recipe()

RUN_CONFIG_DEFAULTS: dict[str, str | int | float | bool] = {
    "num-server-rounds": _ROUNDS,
    "local-epochs": _EPOCHS,
    "lr": _LR,
    "equal-steps": _EQUAL_STEPS,
    "seed": 0,
    "family": "rul-mlp",
    "version": "",
    "start-from": "latest",
    "registry-url": "",
    "publish": True,
    "out-dir": "",
    "kind-spec": "",
    "target-cap": 125.0,
    "node-wait-s": 120.0,
    "round-timeout-s": 3600.0,
    **{
        STRATEGY_PREFIX + name.replace("_", "-"): (_OPTIONAL_ZERO[name] if value is None else value)
        for name, value in StrategyConfig().model_dump().items()
    },
    **{LOCAL_PREFIX + name.replace("_", "-"): value for name, value in local_fit_options().items()},
    **({LOCAL_PREFIX + "steps": _LOCAL_STEPS} if _LOCAL_STEPS else {}),
}


def toml_value(value: object) -> str:
    """A TOML scalar (JSON string syntax is valid TOML for basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


class RoundConfig(BaseModel):
    """What the ServerApp does in one run (parsed from Flower's run config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_server_rounds: int = Field(ge=1)
    local_epochs: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    equal_steps: bool = Field(default=False, description="Every site takes local-epochs x (mean site rows / batch) steps per round.")
    seed: int = 0
    family: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    version: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$", description="'' = next integer after the registry's versions.")
    start_from: Literal["latest", "init"] = Field(
        description="latest: the registry's latest prior of the family if it has this model's shape, else fresh weights.")
    registry_url: str = Field(default="", description="'' = env TWINSTREAM_REGISTRY_URL; both empty: nothing published.")
    publish: bool = True
    out_dir: str = Field(default="", description="Where the aggregated artifact is written ('' = a temporary folder).")
    kind_spec: str = Field(default="", description="A declared kind (JSON of its twins.yaml entry); '' = C-MAPSS rul-mlp.")
    target_cap: float = Field(default=125.0, gt=0.0, description="Labels are capped here (the prior predicts [0, cap]).")
    node_wait_s: float = Field(gt=0.0)
    round_timeout_s: float = Field(gt=0.0)
    strategy: StrategyConfig
    local: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Options of the sites' local step.")

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> RoundConfig:
        """Parse Flower's flattened run config; unknown keys are refused (a typo must not be ignored)."""
        unknown = sorted(set(run_config) - set(RUN_CONFIG_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown run config keys: {unknown}")
        merged = {**RUN_CONFIG_DEFAULTS, **run_config}
        if merged["kind-spec"] and merged["family"] == RUN_CONFIG_DEFAULTS["family"]:  # never a kind's prior as rul-mlp
            merged["family"] = kind_family(KindSpec.model_validate_json(str(merged["kind-spec"])))
        strategy: dict[str, object] = {}
        top: dict[str, object] = {}
        local: dict[str, object] = {}
        for key, value in merged.items():
            if key.startswith(LOCAL_PREFIX):
                local[key[len(LOCAL_PREFIX):].replace("-", "_")] = value
            elif key.startswith(STRATEGY_PREFIX):
                name = key[len(STRATEGY_PREFIX):].replace("-", "_")
                strategy[name] = None if name in _OPTIONAL_ZERO and not value else value
            else:
                top[key.replace("-", "_")] = value
        return cls(**top, strategy=StrategyConfig(**strategy), local=local)

    def kind(self) -> KindSpec | None:
        """The declared kind this round trains (None: the C-MAPSS ``rul-mlp`` prior)."""
        return KindSpec.model_validate_json(self.kind_spec) if self.kind_spec else None

    def layout(self) -> FeatureLayout:
        """The features the round's model reads (see :class:`~twinstream.models.federated_data.FeatureLayout`)."""
        from twinstream.models.federated import kind_layout, rul_layout

        kind = self.kind()
        return kind_layout(kind, self.target_cap) if kind is not None else rul_layout(self.target_cap)

    def resolved_registry_url(self, env: Mapping[str, str] | None = None) -> str:
        """The registry to publish to: the run config's, else ``TWINSTREAM_REGISTRY_URL``."""
        env = os.environ if env is None else env
        return (self.registry_url or env.get("TWINSTREAM_REGISTRY_URL", "")).rstrip("/")


def run_config_overrides(strategy: StrategyConfig | None = None, **values: object) -> dict[str, object]:
    """Run-config overrides from Python names (``num_server_rounds=2``) and a strategy config.

    >>> run_config_overrides(StrategyConfig(name="krum", num_malicious=1), num_server_rounds=2)["strategy.num-malicious"]
    1
    """
    out: dict[str, object] = {}
    for name, value in values.items():
        key = name.replace("_", "-")
        if key not in RUN_CONFIG_DEFAULTS:
            raise ValueError(f"unknown run config key {key!r}")
        if value is not None:
            out[key] = value
    if strategy is not None:
        for name, value in strategy.model_dump().items():
            out[STRATEGY_PREFIX + name.replace("_", "-")] = _OPTIONAL_ZERO[name] if value is None else value
    return out


def kind_family(kind: KindSpec) -> str:
    """The registry family a kind's federated prior is published as: its ``prior: {registry: ...}``, else its name."""
    return kind.prior.registry if kind.prior is not None and kind.prior.registry else kind.name
