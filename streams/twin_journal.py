"""Undo for a twin whose step failed: its last checkpointed bytes and the records applied since.

Why not a snapshot before every step: pickling a twin costs a sizeable fraction of a
step, on the hot path. The checkpoint serializes every changed twin anyway, so those bytes are kept
as the twin's base and the records applied since are remembered (a reference each).
Undoing a failed record = the base, with those records decoded and applied again
(:meth:`TwinProcessor._restore <twinstream.streams.processor.TwinProcessor>`).
Why the records and not their decoded samples: the raw record is held anyway until its
event is acked, while a decoded sample is about 2.4 KB more per event, for every event
waiting for a checkpoint (docs/decisions.md); an undo is rare, so it decodes again.

>>> journal = TwinJournal()
>>> journal.loaded("e1", None)
>>> journal.base["e1"] == NEW_TWIN, journal.records.get("e1")
(True, None)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twinstream.models.twin import Twin

NEW_TWIN = b""  # base of a twin that was created, not loaded: undo starts from a new twin
MAX_JOURNAL = 10_000  # records per twin between checkpoints before they are folded into a new base


class TwinJournal:
    """Per twin: the base bytes and the records applied since (cleared at every checkpoint)."""

    def __init__(self) -> None:
        self.base: dict[str, bytes] = {}
        self.records: dict[str, list[Any]] = {}

    def loaded(self, entity_id: str, blob: bytes | None) -> None:
        """The twin came from ``blob`` (None: a new twin); nothing applied since."""
        self.base[entity_id] = blob or NEW_TWIN
        self.records.pop(entity_id, None)

    def applied(self, entity_id: str, record: Any, twin: Twin) -> None:
        """``record`` changed the twin; a processor run without checkpoints (benchmarks) folds every 10,000."""
        done = self.records.setdefault(entity_id, [])
        done.append(record)
        if len(done) > MAX_JOURNAL:
            self.loaded(entity_id, twin.to_bytes())

    def checkpointed(self, entity_id: str, blob: bytes) -> None:
        """The checkpoint wrote ``blob``: the new base."""
        self.loaded(entity_id, blob)

    def clear(self) -> None:
        self.base.clear()
        self.records.clear()
