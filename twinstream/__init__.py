"""twinstream: a streaming platform for hyper-personalized digital twins.

The platform's pieces live in sub-packages: :mod:`twinstream.schemas` (messages and
topics), :mod:`twinstream.models` (pure learning code), :mod:`twinstream.streams` (the
Faust worker) and :mod:`twinstream.connectors` (plant sources and sinks).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("twinstream")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
