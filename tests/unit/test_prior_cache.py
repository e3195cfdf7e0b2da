"""A loaded prior is found again cheaply, but a changed manifest or another feature schema is still checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from twinstream.models.features import RulFeatures
from twinstream.models.prior import PriorMismatchError, bundled_prior_dir, load_prior
from twinstream.models.prior_twin import PriorTwin
from twinstream.schemas.prior import MANIFEST_FILE


def test_changed_manifest_is_read_again(tmp_path: Path) -> None:
    directory = tmp_path / "prior"
    shutil.copytree(bundled_prior_dir(), directory)
    schema = RulFeatures().schema()
    first = load_prior(directory, schema)
    assert load_prior(directory, schema) is first  # found again
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["weights_sha256"] = "0" * 64
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    with pytest.raises(PriorMismatchError, match="sha256 mismatch"):
        load_prior(directory, schema)


def test_another_schema_is_checked_after_a_cached_load(tmp_path: Path) -> None:
    directory = tmp_path / "prior"
    shutil.copytree(bundled_prior_dir(), directory)
    load_prior(directory, RulFeatures().schema())
    with pytest.raises(PriorMismatchError, match="fast_span"):
        load_prior(directory, RulFeatures(fast_span=3).schema())


def test_twins_of_one_prior_share_its_domain_check() -> None:
    a, b = PriorTwin(), PriorTwin()
    assert a._domain is b._domain and a._names is b._names
    assert PriorTwin(fallback_margin=0.1)._fallback_domain is not a._fallback_domain
