"""Federated prior training, the data side: sites, their rows, and the statistics that may leave them.

Why a lifetime split: sites in a real fleet are not random samples of one fleet (an
operator of short-haul engines sees short lives). C-MAPSS FD001 has 100 training
engines that run to failure after 128 to 362 cycles; :func:`site_engines` sorts them
by lifetime (ties by unit id) and gives each of ``n_sites`` sites one contiguous block
(quartiles for 4 sites): ``site-1`` has the 25 shortest-lived engines, ``site-4`` the
25 longest-lived. The split is deterministic, disjoint and covers every engine; the
sites differ in label range (RUL at a given age) and in size (rows).

Features are computed by :class:`~twinstream.models.features.RulFeatures`, the class
the live twin uses (via :func:`~twinstream.models.prior_train.engine_features`), so a
prior trained here never sees features a twin cannot produce.

What may leave a site (nothing here sends anything; this is what the functions return
for a sender): model parameters (:mod:`.federated`) and aggregate statistics. The only
statistics are :func:`site_moments`: per feature, the share of rows where it is present
and its mean and mean square over the site's rows (3 x 57 floats) plus the row count.
They are averaged across sites weighted by row count (Flower's FedAvg aggregation,
which gives exactly the pooled moments) into one :class:`Normalization` that every
site then uses. No row, engine id or label leaves a site.

>>> sites = site_engines(None)
>>> [len(sites[s]) for s in sorted(sites)]
[25, 25, 25, 25]
>>> sorted(set().union(*sites.values())) == list(range(1, 101))
True
>>> life = load_subset("FD001").train_life
>>> max(life[u] for u in sites["site-1"]) <= min(life[u] for u in sites["site-2"])
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from twinstream.datasets.cmapss import CmapssSubset, load_subset, parse_rows, subset_files
from twinstream.models.features import feature_names, stateless_names

CAP = 125.0  # RUL targets are capped here, as for the bundled prior
SITE_PREFIX = "site-"


@dataclass(frozen=True)
class FeatureLayout:
    """Which features a federated model reads: every feature (twin head), the prior head's inputs, the target cap.

    Why a value and not module constants: the C-MAPSS ``rul-mlp`` prior reads
    :class:`~twinstream.models.features.RulFeatures`, a declared kind reads its generic
    features (:mod:`.generic_features`); the networks, the local step and the artifact
    are the same code over either layout. ``schema`` is the kind's feature schema as
    JSON ('' for the C-MAPSS layout): what the server announces and every site checks.
    """

    names: tuple[str, ...]
    prior_inputs: tuple[str, ...]
    cap: float = CAP
    schema: str = ""

    @property
    def prior_columns(self) -> list[int]:
        return [self.names.index(n) for n in self.prior_inputs]


@lru_cache(maxsize=8)
def rul_layout(cap: float = CAP) -> FeatureLayout:
    """The C-MAPSS layout: :func:`~.features.feature_names`, the stateless prior inputs, RUL capped at ``cap``."""
    return FeatureLayout(tuple(feature_names()), tuple(stateless_names()), cap)


def site_names(n_sites: int = 4) -> list[str]:
    """``site-1`` .. ``site-<n>``, shortest-lived engines first."""
    return [f"{SITE_PREFIX}{i}" for i in range(1, n_sites + 1)]


def _lifetimes(subset: str, data_dir: Path | None) -> dict[int, int]:
    rows = parse_rows(subset_files(subset, data_dir)["train"])
    life: dict[int, int] = {}
    for r in rows:
        life[r.unit] = max(life.get(r.unit, 0), r.cycle)
    return life


def split_by_lifetime(life: dict[int, int], n_sites: int = 4) -> dict[str, list[int]]:
    """Engines sorted by lifetime (then unit id), cut into ``n_sites`` contiguous blocks of near-equal size.

    >>> split_by_lifetime({1: 300, 2: 150, 3: 200, 4: 150}, 2)
    {'site-1': [2, 4], 'site-2': [1, 3]}
    """
    if n_sites < 1 or n_sites > len(life):
        raise ValueError(f"cannot split {len(life)} engines into {n_sites} sites")
    order = sorted(life, key=lambda u: (life[u], u))
    bounds = [round(i * len(order) / n_sites) for i in range(n_sites + 1)]
    return {name: sorted(order[bounds[i] : bounds[i + 1]]) for i, name in enumerate(site_names(n_sites))}


def site_engines(data_dir: Path | None, subset: str = "FD001", n_sites: int = 4) -> dict[str, list[int]]:
    """The non-IID split of ``subset``'s training engines (see the module doc)."""
    return split_by_lifetime(_lifetimes(subset, data_dir), n_sites)


def describe_split(data_dir: Path | None, subset: str = "FD001", n_sites: int = 4) -> dict[str, dict[str, object]]:
    """Per site: engines, rows, lifetime range (for reports)."""
    life = _lifetimes(subset, data_dir)
    out: dict[str, dict[str, object]] = {}
    for name, units in split_by_lifetime(life, n_sites).items():
        lives = [life[u] for u in units]
        out[name] = {"engines": len(units), "rows": int(sum(lives)), "life_min": min(lives), "life_max": max(lives),
                     "units": units}
    return out


@dataclass(frozen=True)
class SiteData:
    """One site's training rows: features as the twin computes them, capped RUL targets, engine per row."""

    name: str
    x: np.ndarray  # (rows, features) in feature_names() order; NaN = missing
    y: np.ndarray  # RUL capped at CAP
    units: np.ndarray  # engine id per row
    true_rul: np.ndarray = field(default_factory=lambda: np.zeros(0))  # uncapped RUL per row
    digest: str = ""  # sha256 over the site's rows (provenance; may leave the site, it is not data)
    layout: FeatureLayout | None = None  # None: the C-MAPSS layout (rul_layout())

    @property
    def features(self) -> FeatureLayout:
        return self.layout if self.layout is not None else rul_layout()

    @property
    def n(self) -> int:
        return int(len(self.y))

    @property
    def engines(self) -> list[int]:
        return sorted(int(u) for u in np.unique(self.units))


def _features(subset: CmapssSubset, units: set[int] | None, cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from twinstream.models.prior_train import engine_features

    if units is not None:
        subset = CmapssSubset(subset.name, [r for r in subset.train if r.unit in units], [], {}, subset.train_life)
    x, y, u = engine_features(subset, None, cap)
    rows = sorted(subset.train, key=lambda r: (r.unit, r.cycle))
    true = np.array([float(subset.train_rul_at(r)) for r in rows])
    return x, y, u, true


def _train_only(subset: str, data_dir: Path | None) -> CmapssSubset:
    """The training engines of a folder that may hold only ``train_<subset>.txt`` (a site's own folder)."""
    path = subset_files(subset, data_dir)["train"]
    if not path.is_file():
        raise FileNotFoundError(f"C-MAPSS {subset}: missing {path}")
    rows = parse_rows(path)
    life: dict[int, int] = {}
    for r in rows:
        life[r.unit] = max(life.get(r.unit, 0), r.cycle)
    return CmapssSubset(subset, rows, [], {}, life)


def load_site_data(data_dir: Path | None, subset: str = "FD001", site: str | None = None, n_sites: int = 4,
                   cap: float = CAP, max_engines: int | None = None) -> SiteData:
    """A site's training data.

    ``data_dir`` is a folder in NASA's layout (only ``train_<subset>.txt`` is read;
    None = the bundled FD001). ``site=None``: every engine in the folder (a site given
    its own folder, e.g. written by :func:`export_site`); ``site="site-k"``: that site of
    the lifetime split of the folder's engines. ``max_engines`` keeps the site's first
    engines by unit id (smoke runs and tests).
    """
    data = load_subset(subset, data_dir) if data_dir is None else _train_only(subset, data_dir)
    if site is None:
        units = sorted(data.train_life)
        name = "local"
    else:
        split = split_by_lifetime(data.train_life, n_sites)
        if site not in split:
            raise ValueError(f"unknown site {site!r}; expected one of {', '.join(split)}")
        units, name = split[site], site
    if max_engines is not None:
        units = units[:max_engines]
    x, y, u, true = _features(data, set(units), cap)
    digest = hashlib.sha256(np.ascontiguousarray(np.nan_to_num(x, nan=-1e30)).tobytes() + y.tobytes()).hexdigest()
    return SiteData(name=name, x=x, y=y, units=u, true_rul=true, digest=digest)


def pooled(sites: list[SiteData], name: str = "pooled") -> SiteData:
    """All sites' rows in one (the centralized baseline: what a central server would hold)."""
    return SiteData(
        name=name,
        x=np.concatenate([s.x for s in sites]),
        y=np.concatenate([s.y for s in sites]),
        units=np.concatenate([s.units for s in sites]),
        true_rul=np.concatenate([s.true_rul for s in sites]),
        digest=hashlib.sha256("".join(s.digest for s in sites).encode()).hexdigest(),
        layout=sites[0].layout,
    )


def export_site(out_dir: Path, site: str, data_dir: Path | None = None, subset: str = "FD001", n_sites: int = 4) -> Path:
    """Write ``site``'s engines (the raw lines of ``train_<subset>.txt``) into ``out_dir``, NASA's layout.

    For running a site on its own folder (``load_site_data(out_dir)``); returns the file.
    """
    units = set(site_engines(data_dir, subset, n_sites)[site])
    source = subset_files(subset, data_dir)["train"]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = subset_files(subset, out_dir)["train"]
    with source.open() as src, target.open("w") as dst:
        for line in src:
            parts = line.split()
            if parts and int(float(parts[0])) in units:
                dst.write(line)
    return target


# -- the only statistics that leave a site -----------------------------------------------

@dataclass(frozen=True)
class Normalization:
    """Per-feature mean and standard deviation (all ``feature_names()``), pooled over sites."""

    mean: np.ndarray
    std: np.ndarray

    def to_config(self) -> dict[str, list[float]]:
        """As Flower ConfigRecord values (sent to sites with every training round)."""
        return {"norm-mean": [float(v) for v in self.mean], "norm-std": [float(v) for v in self.std]}

    @classmethod
    def from_config(cls, config: object) -> Normalization:
        get = config.__getitem__  # type: ignore[attr-defined]
        return cls(np.asarray(get("norm-mean"), dtype=np.float64), np.asarray(get("norm-std"), dtype=np.float64))

    def prior_part(self, layout: FeatureLayout | None = None) -> Normalization:
        """The stateless prior head's inputs (age, raw readings) of ``layout`` (default: the C-MAPSS one)."""
        cols = (layout or rul_layout()).prior_columns
        return Normalization(self.mean[cols], self.std[cols])


def site_moments(data: SiteData) -> tuple[list[np.ndarray], dict[str, float]]:
    """Aggregate statistics of a site's features: [present share, mean, mean square] per feature, and its row count.

    Averaging these over sites weighted by ``num-examples`` gives the pooled moments
    exactly (:func:`normalization_from_moments`). float64, NaN (missing) ignored.
    """
    present = ~np.isnan(data.x)
    filled = np.where(present, data.x, 0.0)
    n = max(data.n, 1)
    arrays = [present.sum(axis=0) / n, filled.sum(axis=0) / n, (filled**2).sum(axis=0) / n]
    return [a.astype(np.float64) for a in arrays], {"num-examples": float(data.n)}


def normalization_from_moments(arrays: list[np.ndarray]) -> Normalization:
    """Mean and std from row-weighted averages of :func:`site_moments` arrays (a constant feature gets std 1)."""
    share, m1, m2 = (np.asarray(a, dtype=np.float64) for a in arrays)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(share > 0, m1 / share, 0.0)
        var = np.where(share > 0, m2 / share - mean**2, 1.0)
    std = np.sqrt(np.maximum(var, 0.0))
    std[~np.isfinite(std) | (std < 1e-6 * np.maximum(1.0, np.abs(mean)))] = 1.0
    mean[~np.isfinite(mean)] = 0.0
    return Normalization(mean, std)


def local_normalization(data: SiteData) -> Normalization:
    """A site's own normalization (a site that trains alone: local-only baseline, single-site runs)."""
    return normalization_from_moments(site_moments(data)[0])
