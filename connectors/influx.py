"""Predictions as InfluxDB points, and a writer that sends batches of them.

Point layout (one point per :class:`~twinstream.schemas.prediction.Prediction`)::

    prediction,entity_id=<id>[,kind=<k>],model_version=<v>[,prior_version=<p>],synthetic=<true|false>,target=<t>[,task=<t>]
        [domain_score=<f>,][flagged=<0|1>i,][in_domain=<0|1>i,][lower=<f>,]seq=<n>i,[synthetic_share=<f>,]
        [target_seq=<n>i,]updates=<n>i,[upper=<f>,]value=<f> <event time, ns>

``synthetic=true`` tags a prediction with synthetic input behind it (a sensor filled by
the sidecar, ``synthetic_share > 0``; see :mod:`twinstream.schemas.prediction`),
``synthetic=false`` one made from measured values only, so dashboards can split or
filter the two. ``synthetic_share`` is written only when above 0 (absent = 0), which
keeps the points of measured-only predictions exactly as before the field existed.

Why these choices:

* **Series = measurement + tags**, and InfluxDB overwrites a point written again with
  the same series and timestamp. Every tag is a pure function of the prediction, so a
  prediction redelivered after a crash (at-least-once) overwrites itself: writes are
  idempotent. (VictoriaMetrics keeps duplicates unless it runs with
  ``-dedup.minScrapeInterval=1ms``; then it keeps one sample per series and millisecond.)
* **model_version / prior_version are tags**, not fields: dashboards group and filter
  by them, and VictoriaMetrics turns string *fields* into meaningless ``0`` samples
  while it keeps tags as labels. Their cardinality is small (a handful of versions).
  The cost: if a redelivered prediction ever carried another model version, it would
  land in a second series instead of overwriting; the worker derives a prediction
  for ``(entity_id, seq)`` deterministically, so that does not happen.
* **seq and updates are integer fields** (``i`` suffix), never tags: one series per
  event would explode cardinality. ``seq`` in the data lets a reader check that every
  ``(entity_id, seq)`` arrived.
* **The synthetic tag after a crash**: whether a fill had reached the twin when it
  applied an event depends on how the measured and the synthetic topic interleaved, so
  a prediction recomputed after a crash can (rarely) differ in ``synthetic`` and land
  in the other series for the same time. Readers that need one point per event
  de-duplicate on ``(entity_id, seq)``.
* **kind and task** (twins of declared kinds, twins.yaml): ``kind`` is a tag when the
  prediction has one, ``task`` only when it is not ``label``, so a twin's forecast and
  anomaly score of one metric at one event are two series, not one point overwriting
  the other, and the points of a worker without kinds are unchanged. ``target_seq`` (a
  forecast's target sample) is written only when it differs from ``seq``; ``in_domain``
  and ``flagged`` are 0/1 integer fields (one type for InfluxDB and VictoriaMetrics).
  A point is thus identified by ``(entity_id, seq, task, target)``, as a prediction is.
* **time = event time in ns**. Two predictions of one entity and target with the
  same event time share a timestamp, so the later one wins (InfluxDB's data model;
  VictoriaMetrics stores milliseconds, so there the window is 1 ms).

Two write paths (``Settings.influx_api``):

* ``v2`` - ``POST /api/v2/write?org=&bucket=&precision=ns`` through influxdb-client's
  ``WriteApi``; for InfluxDB 2.x/3.x and VictoriaMetrics. ``influx_token`` is sent as
  ``Authorization: Token ...``.
* ``v1`` - ``POST /write?db=<bucket>&precision=ns`` through the same client's HTTP
  stack. Why not the client's v2 path against 1.x: the ``/api/v2/write`` compatibility
  endpoint exists only from InfluxDB 1.8, and Debian ships ``influxdb`` 1.6.7, which
  answers it with 404 (measured). ``/write`` works on every 1.x. A token of the form
  ``user:password`` is sent as HTTP Basic auth, which 1.x accepts when auth is on.

The writer is synchronous (urllib3 underneath); the Faust sink runs it in a thread.
It never drops points: :meth:`InfluxWriter.write_lines` raises on any failure and
:meth:`InfluxWriter.write` retries with capped exponential backoff until it succeeds
or the caller's ``max_attempts`` is used up.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType

import urllib3
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS

from twinstream.schemas.prediction import Prediction
from twinstream.settings import Settings

log = logging.getLogger(__name__)

MEASUREMENT = "prediction"
RETRYABLE_STATUS = frozenset({408, 429})
# 4xx answers about the server's setup, not about the points: every point would get them
SETUP_STATUS = frozenset({401, 403, 404})


# --- pure conversion ------------------------------------------------------------------


def prediction_point(prediction: Prediction) -> Point:
    """The InfluxDB point of one prediction (layout in the module docstring)."""
    point = (
        Point(MEASUREMENT)
        .tag("entity_id", prediction.entity_id)
        .tag("target", prediction.target)
        .tag("synthetic", "true" if prediction.synthetic else "false")
        .tag("model_version", prediction.model_version)
        .field("value", float(prediction.value))
        .field("seq", int(prediction.seq))
        .field("updates", int(prediction.updates))
        .time(prediction.event_time_ns, WritePrecision.NS)
    )
    if prediction.prior_version is not None:
        point.tag("prior_version", prediction.prior_version)
    if prediction.lower is not None:
        point.field("lower", float(prediction.lower))
    if prediction.upper is not None:
        point.field("upper", float(prediction.upper))
    if prediction.synthetic_share > 0.0:
        point.field("synthetic_share", float(prediction.synthetic_share))
    if prediction.kind is not None:
        point.tag("kind", prediction.kind)
    if prediction.task != "label":
        point.tag("task", prediction.task)
    if prediction.target_seq is not None and prediction.target_seq != prediction.seq:
        point.field("target_seq", int(prediction.target_seq))
    if prediction.in_domain is not None:
        point.field("in_domain", int(prediction.in_domain))
    if prediction.domain_score is not None:
        point.field("domain_score", float(prediction.domain_score))
    if prediction.flagged is not None:
        point.field("flagged", int(prediction.flagged))
    return point


def to_line(prediction: Prediction) -> str:
    """One line of line protocol (tags and fields sorted by key, ns timestamp)."""
    return prediction_point(prediction).to_line_protocol()


def to_line_protocol(predictions: Iterable[Prediction]) -> str:
    """A write body: one line per prediction, newline-separated."""
    return "\n".join(to_line(p) for p in predictions)


def backoff_delays(
    initial_s: float, max_s: float, *, factor: float = 2.0, jitter: float = 0.2, rng: random.Random | None = None
) -> Iterator[float]:
    """Endless retry delays: ``initial_s * factor**n`` capped at ``max_s``.

    Each delay is shrunk by a random fraction up to ``jitter`` so that several sinks
    that failed together do not hammer a recovering server in lockstep; a delay never
    exceeds ``max_s``.
    """
    if initial_s <= 0 or max_s <= 0:
        raise ValueError("backoff delays must be positive")
    rng = rng or random.Random()
    delay = min(initial_s, max_s)
    while True:
        yield delay * (1.0 - jitter * rng.random())
        delay = min(delay * factor, max_s)


# --- writer ---------------------------------------------------------------------------


class InfluxWriteError(RuntimeError):
    """A write that did not succeed; nothing can be assumed written.

    ``retryable`` is False for HTTP 4xx answers other than 408/429 (bad request, auth,
    missing database): retrying will not heal them by itself. :attr:`rejects_points`
    tells the two kinds apart: auth and a missing database/bucket (401/403/404) concern
    the server's setup, and the sink retries them for as long as it takes (logged as
    errors for an operator); any other such 4xx (400 field type conflict, 413, 422, ...)
    is about the points, and the sink sends the points it cannot write to its
    dead-letter topic after bounded tries.

    >>> InfluxWriteError("x", status=400, retryable=False).rejects_points
    True
    >>> [InfluxWriteError("x", status=s, retryable=False).rejects_points for s in (401, 404, 429, 503, None)]
    [False, False, False, False, False]
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable

    @property
    def rejects_points(self) -> bool:
        """InfluxDB refused the points themselves, for good (see the class docstring)."""
        return (self.status is not None and 400 <= self.status < 500
                and self.status not in RETRYABLE_STATUS and self.status not in SETUP_STATUS)


class InfluxWriter:
    """Writes batches of predictions to InfluxDB 2 / VictoriaMetrics (v2) or InfluxDB 1.x (v1).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, settings: Settings, *, timeout_ms: int = 10_000) -> None:
        if not settings.influx_url:
            raise ValueError("settings.influx_url is not set")
        self.url = settings.influx_url.rstrip("/")
        self.api = settings.influx_api
        self.org = settings.influx_org
        self.bucket = settings.influx_bucket
        self.initial_backoff_s = min(0.1, settings.influx_max_backoff_s)
        self.max_backoff_s = settings.influx_max_backoff_s
        token = settings.influx_token.get_secret_value()
        if self.api == "v1":
            # 1.x knows no tokens; "user:password" goes out as HTTP Basic auth.
            self._client = InfluxDBClient(
                url=self.url, token=token or None, org=self.org, timeout=timeout_ms, auth_basic=bool(token)
            )
            self._write_api = None
        else:
            self._client = InfluxDBClient(url=self.url, token=token or None, org=self.org, timeout=timeout_ms)
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    # one attempt ------------------------------------------------------------------------

    def write_lines(self, body: str) -> None:
        """Send one line-protocol body once; raise :class:`InfluxWriteError` on any failure."""
        if not body:
            return
        try:
            if self._write_api is not None:
                self._write_api.write(
                    bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.NS
                )
            else:
                self._client.api_client.call_api(
                    "/write",
                    "POST",
                    path_params={},
                    query_params=[("db", self.bucket), ("precision", "ns")],
                    header_params={"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json"},
                    body=body.encode("utf-8"),
                    post_params=[],
                    files={},
                    response_type=None,
                    auth_settings=[],
                    _return_http_data_only=True,
                    collection_formats={},
                )
        except InfluxDBError as exc:
            status = getattr(exc, "status", None) or (exc.response.status if exc.response is not None else None)
            retryable = not status or status >= 500 or status in RETRYABLE_STATUS
            detail = exc.message or getattr(exc, "body", None) or str(exc)
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise InfluxWriteError(
                f"{self.api} write to {self.url} failed: HTTP {status}: {str(detail).strip()[:300]}",
                status=status,
                retryable=retryable,
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise InfluxWriteError(f"{self.api} write to {self.url} failed: {exc!r}") from exc

    # with retries -----------------------------------------------------------------------

    def write(
        self,
        predictions: Sequence[Prediction],
        *,
        max_attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_failure: Callable[[int, InfluxWriteError], None] | None = None,
    ) -> int:
        """Write ``predictions``, retrying every failure with capped exponential backoff.

        Returns the number of points written. ``max_attempts=None`` retries until the
        server takes the batch; otherwise the last :class:`InfluxWriteError` is raised
        after that many attempts, and the caller still owns the batch.
        """
        body = to_line_protocol(predictions)
        delays = backoff_delays(self.initial_backoff_s, self.max_backoff_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                self.write_lines(body)
                return len(predictions)
            except InfluxWriteError as exc:
                if on_failure is not None:
                    on_failure(attempt, exc)
                if max_attempts is not None and attempt >= max_attempts:
                    raise
                delay = next(delays)
                log.warning("influx write of %d points failed (attempt %d, retry in %.2f s): %s",
                            len(predictions), attempt, delay, exc)
                sleep(delay)

    def close(self) -> None:
        if self._write_api is not None:
            self._write_api.close()
        self._client.close()

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
