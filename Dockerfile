# syntax=docker/dockerfile:1
#
# twinstream image: one image for every process (worker, sink, replay, topic admin).
# The entry point is the `twinstream` console script; the command picks the process:
#   docker run --rm twinstream:local worker
#
# Build:  docker build -t twinstream:local .
#
# Only the files the package needs are copied (no .dockerignore needed): the
# pyproject and the five source folders it maps under the `twinstream` namespace.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtualenv ------------
FROM ${PYTHON_IMAGE} AS build

# torch is a dependency; the default Linux wheel on PyPI is the CUDA build (several GB).
# For a CPU-only image, pass an index that serves CPU builds of the pinned torch:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<index> -t twinstream:local .
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# README.m[d]: copied when it exists (the glob may match nothing).
COPY pyproject.toml README.m[d] ./
COPY twinstream/ twinstream/
COPY schemas/ schemas/
COPY models/ models/
COPY streams/ streams/
COPY connectors/ connectors/
COPY federation/ federation/
COPY datasets/ datasets/
COPY evaluation/ evaluation/

RUN python -m venv /opt/twinstream \
    && /opt/twinstream/bin/pip install . \
    && /opt/twinstream/bin/twinstream --help >/dev/null

# --- runtime: the virtualenv only, run as an unprivileged user -----------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="twinstream" \
      org.opencontainers.image.description="Streaming platform for digital twins (Kafka + Faust)" \
      org.opencontainers.image.licenses="Apache-2.0"

# /data is the worker's state directory (RocksDB tables); mount a volume there.
ENV PATH=/opt/twinstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    TWINSTREAM_DATA_DIR=/data

RUN groupadd --system --gid 10001 twinstream \
    && useradd --system --uid 10001 --gid twinstream --home-dir /home/twinstream \
       --create-home --shell /usr/sbin/nologin twinstream \
    && mkdir -p /data \
    && chown twinstream:twinstream /data

COPY --from=build /opt/twinstream /opt/twinstream

USER 10001:10001
WORKDIR /home/twinstream

# Prometheus metrics when TWINSTREAM_METRICS_PORT=9464 (the port used by compose and helm).
EXPOSE 9464

ENTRYPOINT ["twinstream"]
CMD ["--help"]
