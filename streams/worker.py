"""Build and run the twin worker process.

``build_worker_app`` is what the CLI, the demo and the tests use, so they all run the
same agents with the same configuration.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import signal

import faust

from twinstream.kafka_security import require_kafka
from twinstream.settings import Settings
from twinstream.streams.api.server import register_api, register_health
from twinstream.streams.app import create_app, declare_topics, quiet_library_loggers
from twinstream.streams.ingest import IngestAgent
from twinstream.streams.metrics import WorkerMetrics, serve_metrics
from twinstream.streams.topic_admin import ensure_topics


def build_worker_app(settings: Settings, metrics: WorkerMetrics | None = None) -> tuple[faust.App, IngestAgent]:
    """A Faust app with the ingest agent, its twin table and checkpoint timer.

    With ``prior_registry_url`` set, also a timer that pulls the latest prior every
    ``prior_poll_interval_s`` (and once at start) and hot-swaps it into the twins
    (:mod:`twinstream.streams.prior_pull`). A timer refreshes the health gauges (consumer
    lag, twins per kind); with ``api_port`` set the twin API serves from a process
    the worker starts and feeds (:mod:`twinstream.streams.api`).
    """
    app = create_app(settings)
    topics = declare_topics(app, settings)
    agent = IngestAgent(app, settings, topics, metrics or WorkerMetrics())
    if agent.intake is not None:
        agent.intake.install(app.consumer)
    register_prior_pull(app, settings, agent)
    probe = register_health(app, agent, settings)
    register_api(app, agent, settings, probe)
    return app, agent


def register_prior_pull(app: faust.App, settings: Settings, agent: IngestAgent) -> None:
    """The learner's prior pull, plus one per registry family of the declared kinds (``prior: {registry: ...}``)."""
    from twinstream.streams.prior_pull import kind_pullers, puller_for_worker

    puller = puller_for_worker(settings, agent.processor, agent.metrics, agent.lock)
    pullers = ([puller] if puller is not None else []) + kind_pullers(settings, agent.processor, agent.metrics, agent.lock)
    for p in pullers:
        logging.getLogger(__name__).info("prior pull: every %.1f s from %s, family %s, starting at %s",
                                         settings.prior_poll_interval_s, settings.prior_registry_url, p.family,
                                         p.prior_version)
        app.task(p.poll)
        app.timer(settings.prior_poll_interval_s)(p.poll)


def dump_tasks_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` logs the stack of every asyncio task: what a stuck worker awaits."""
    task_log = logging.getLogger("twinstream.tasks")

    def dump(*_: object) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        buffer = io.StringIO()
        for task in asyncio.all_tasks(loop):
            buffer.write(f"--- {task!r}\n")
            task.print_stack(limit=12, file=buffer)
        task_log.warning("asyncio tasks:\n%s", buffer.getvalue())

    signal.signal(signal.SIGUSR1, dump)


def tune_garbage_collector(gen0_threshold: int) -> None:
    """Collect less often: the worker's heap is long-lived twins with almost no reference cycles.

    Why: with Python's default (a young-generation pass every 700 allocations) a quarter
    of the twin step went into collector passes that found nothing to free
    (docs/performance.md). Objects alive now (modules, the app) are frozen out of every
    later pass. 0 keeps Python's defaults.
    """
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGINT/SIGTERM (blocking)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    quiet_library_loggers()
    require_kafka(settings)  # wrong credentials / TLS settings: exit with the cause, not retry forever
    ensure_topics(settings)
    metrics = WorkerMetrics()
    if settings.metrics_port is not None:
        serve_metrics(metrics, settings.metrics_port, settings.metrics_addr)
    app, _ = build_worker_app(settings, metrics)
    tune_garbage_collector(settings.gc_gen0_threshold)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    dump_tasks_on_sigusr1()
    worker.execute_from_commandline()


if __name__ == "__main__":  # pragma: no cover - `python -m twinstream.streams.worker`
    run_worker(Settings())
