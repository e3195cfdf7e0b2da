"""The Flower ClientApp: what a site runs on its own data, and the only things it sends back.

A site's SuperNode starts this app for every message of a run. The site's data is
named by the SuperNode's node config (``twinstream federation site --data DIR``), never
by the server: ``data-dir`` (a folder in NASA's C-MAPSS layout; empty = the bundled
FD001), ``site`` (empty = every engine in the folder; ``site-k`` = that block of the
lifetime split, for demos), ``subset``, ``n-sites``, ``max-engines`` (0 = all). Or the
site's own history table (``federation site --csv FILE``): ``csv``, ``entity-column``,
``time-column``, ``label-column`` or ``rul-from-end``, and optionally ``spec`` and
``kind`` (:mod:`.site_history`).

Which features a site computes is the server's to say (every message's config):
without ``feature-schema`` the C-MAPSS ``rul-mlp`` features; with it (a round for a
declared kind) the generic features of the site's own kind (``spec``/``kind`` of its
node config), which must have exactly that schema, and labels capped at
``target-cap``.

Message handlers (each a pure function of the received records and the site's data,
so tests call them without any process; :data:`app` wraps them):

* ``query.moments`` -> ``{"moments": ArrayRecord(3 arrays of n_features), "metrics": {"num-examples"}}``:
  per feature the present share, mean and mean square over the site's rows
  (:func:`~twinstream.models.federated_data.site_moments`); the server averages them
  into the pooled normalization every site trains with.
* ``train`` -> ``{"arrays": ArrayRecord(the model's parameters), "metrics": {num-examples, train_loss, ...}}``:
  the received global arrays fine-tuned on the site's rows
  (:func:`~twinstream.models.federated.local_fit`; FedProx's ``proximal-mu`` when the
  strategy sends it).
* ``evaluate`` -> ``{"metrics": {num-examples, loss, rmse_prior, rmse_twin}}``.
* ``query.calibration`` -> ``{"metrics": {num-examples, ..., prior_abs_hist, twin_abs_hist}}``:
  the share of the site's rows per (predicted-RUL bin, 1-cycle |residual| bin), from
  which the server computes the published prior's interval widths.

Nothing else is put in a reply: no rows, labels, engine ids or file names
(``tests/unit/test_federation_apps.py`` checks every record of every reply). A handler
that fails raises :class:`SiteError` naming only the exception type; the traceback
stays in the site's log.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from twinstream.models.federated import (
    CAP,
    Normalization,
    SiteData,
    evaluate_arrays,
    load_site_data,
    local_fit,
    round_lr,
    site_moments,
)

NodeConfig = Mapping[str, object]


def site_data(node_config: NodeConfig, config: Mapping[str, object] | None = None) -> SiteData:
    """The site's training rows, as named by its node config, over the features ``config`` announces (module doc)."""
    data_dir = str(node_config.get("data-dir", "") or "")
    site = str(node_config.get("site", "") or "")
    max_engines = int(node_config.get("max-engines", 0) or 0)  # type: ignore[call-overload]
    csv = str(node_config.get("csv", "") or "")
    schema = str((config or {}).get("feature-schema", "") or "")
    if schema:
        if not csv or not node_config.get("spec"):
            raise ValueError("this round trains a declared kind's prior: the site needs --csv and --spec")
        return _load_kind(csv, *(str(node_config.get(k, "") or "") for k in HISTORY_KEYS),
                          bool(node_config.get("rul-from-end", False)), max_engines, schema,
                          float((config or {}).get("target-cap", CAP)))  # type: ignore[arg-type]
    if csv:
        return _load_history(csv, *(str(node_config.get(k, "") or "") for k in HISTORY_KEYS),
                             bool(node_config.get("rul-from-end", False)), max_engines)
    return _load(data_dir, str(node_config.get("subset", "FD001")), site, int(node_config.get("n-sites", 4)),  # type: ignore[call-overload]
                 max_engines)


HISTORY_KEYS = ("entity-column", "time-column", "label-column", "spec", "kind")


@lru_cache(maxsize=4)
def _load_history(csv: str, entity_column: str, time_column: str, label_column: str, spec: str, kind: str,
                  rul_from_end: bool, max_engines: int) -> SiteData:
    from twinstream.federation.site_history import load_history_site

    return load_history_site(csv, entity_column, time_column, label_column or None, rul_from_end, spec or None,
                             kind or None, max_engines=max_engines or None)


@lru_cache(maxsize=4)
def _load_kind(csv: str, entity_column: str, time_column: str, label_column: str, spec: str, kind: str,
               rul_from_end: bool, max_engines: int, schema: str, cap: float) -> SiteData:
    from twinstream.federation.site_history import load_kind_site

    return load_kind_site(csv, entity_column, time_column, spec, kind or None, label_column or None, rul_from_end, cap,
                          max_engines or None, expected_schema=schema)


@lru_cache(maxsize=4)
def _load(data_dir: str, subset: str, site: str, n_sites: int, max_engines: int) -> SiteData:
    return load_site_data(Path(data_dir) if data_dir else None, subset=subset, site=site or None, n_sites=n_sites,
                          max_engines=max_engines or None)


def _arrays(content: RecordDict) -> list[np.ndarray]:
    return content.array_records["arrays"].to_numpy_ndarrays()


def _config(content: RecordDict) -> ConfigRecord:
    return content.config_records.get("config", ConfigRecord())


def moments_reply(data: SiteData) -> RecordDict:
    arrays, metrics = site_moments(data)
    return RecordDict({"moments": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})


LOCAL_PREFIX = "local."
# set by this module per message, or the site's own business (threads): never taken from local.*
_NOT_FROM_SERVER = {"arrays", "data", "norm", "epochs", "lr", "proximal_mu", "seed", "threads"}


def local_options(config: ConfigRecord) -> dict[str, object]:
    """``local.<name>`` entries of a training config, as ``local_fit`` keywords it accepts (others are ignored:
    a server newer than the site must not make the site fail)."""
    import inspect

    accepted = set(inspect.signature(local_fit).parameters) - _NOT_FROM_SERVER
    options = {key[len(LOCAL_PREFIX):].replace("-", "_"): value for key, value in config.items() if key.startswith(LOCAL_PREFIX)}
    return {name: value for name, value in options.items() if name in accepted}


def train_reply(content: RecordDict, data: SiteData) -> RecordDict:
    """Fine-tune the received arrays on ``data``; reply with the new arrays and scalar metrics only."""
    config = _config(content)
    rounds = int(config.get("num-rounds", 1))
    server_round = int(config.get("server-round", 1))
    arrays, metrics = local_fit(
        _arrays(content), data,
        epochs=int(config.get("local-epochs", 1)),
        lr=round_lr(float(config.get("lr", 0.01)), server_round, rounds),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        seed=int(config.get("seed", 0)) * 1000 + server_round,
        norm=Normalization.from_config(config),
        **local_options(config),  # type: ignore[arg-type]
    )
    return RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({k: float(v) for k, v in metrics.items()})})


def evaluate_reply(content: RecordDict, data: SiteData, calibration: bool = False) -> RecordDict:
    metrics = evaluate_arrays(_arrays(content), data, Normalization.from_config(_config(content)), calibration=calibration)
    return RecordDict({"metrics": MetricRecord(metrics)})


class SiteError(RuntimeError):
    """A handler failed at the site; the details stay in the site's own log."""


def _at_site(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """Log a handler's exception here and let only its type leave: Flower would send the full exception
    text (which can name local paths or values) to the server in its error reply."""

    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            raise SiteError(f"{type(exc).__name__} at the site while handling {msg.metadata.message_type} "
                            "(details in the site's log)") from None

    return wrapped


app = ClientApp()


@app.query("moments")
@_at_site
def _moments(msg: Message, context: Context) -> Message:
    return Message(moments_reply(site_data(context.node_config, _config(msg.content))), reply_to=msg)


@app.train()
@_at_site
def _train(msg: Message, context: Context) -> Message:
    return Message(train_reply(msg.content, site_data(context.node_config, _config(msg.content))), reply_to=msg)


@app.evaluate()
@_at_site
def _evaluate(msg: Message, context: Context) -> Message:
    return Message(evaluate_reply(msg.content, site_data(context.node_config, _config(msg.content))), reply_to=msg)


@app.query("calibration")
@_at_site
def _calibration(msg: Message, context: Context) -> Message:
    return Message(evaluate_reply(msg.content, site_data(context.node_config, _config(msg.content)), calibration=True),
                   reply_to=msg)
