"""The twin query API served by every worker: twin summaries, fleet pages, live prediction streams.

:mod:`.summary` is pure (documents, field selection, filters, cursors), :mod:`.feed`
follows the predictions topic, :mod:`.routing` finds the worker that owns an entity and
keeps the twins the worker published, :mod:`.http` is the FastAPI application and
:mod:`.fastpath` its shortcut for plain summaries. :mod:`.server` starts the API in a
process of its own (:mod:`.process`), which :mod:`.publisher` feeds from the worker.
"""
