"""The twin query API served by every worker: twin summaries, fleet pages, live prediction streams.

:mod:`.summary` is pure (documents, field selection, filters, cursors), :mod:`.feed`
follows the predictions topic, :mod:`.routing` finds the worker that owns an entity,
:mod:`.http` is the FastAPI application and :mod:`.server` runs it in the worker's loop.
"""
