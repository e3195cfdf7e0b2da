"""twinstream: a streaming platform for hyper-personalized digital twins.

Each layer is a top-level folder of the repository, installed as a sub-package, lowest
first: :mod:`twinstream.schemas` (messages, topics, manifests) and
:mod:`twinstream.datasets` (bundled data and loaders); :mod:`twinstream.models` (pure
learning code); the services :mod:`twinstream.streams` (the Faust apps),
:mod:`twinstream.connectors` (plant sources and sinks) and :mod:`twinstream.federation`
(federated rounds and the prior registry); :mod:`twinstream.evaluation` (the ``eval``
commands' engines, which the product never imports). This package itself is the shell:
the CLI, settings, the embedded broker and the demo.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("twinstream")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
