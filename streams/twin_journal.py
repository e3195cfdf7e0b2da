"""Undo for a twin whose step failed: the records applied since its last checkpointed state.

Why not a snapshot before every step: pickling a twin costs a sizeable fraction of a
step, on the hot path. The checkpoint serializes every changed twin anyway, so undoing a
failed record = the twin's last checkpointed bytes, with the records applied since
decoded and applied again (:meth:`TwinProcessor._restore
<twinstream.streams.processor.TwinProcessor>`).
Why the records and not their decoded samples: the raw record is held anyway until its
event is acked, while a decoded sample is about 2.4 KB more per event, for every event
waiting for a checkpoint (docs/decisions.md); an undo is rare, so it decodes again.
Why the journal keeps no copy of those bytes: they are in the table, or in the
checkpoint's snapshot until they are, and an undo is rare; a copy per resident twin
cost a pickle's size (about 4.8 KB) for every twin in memory, most of them idle in a
large fleet. Only a twin whose records were folded without a checkpoint (a processor
run without checkpoints, in benchmarks) has bytes of its own here.

>>> journal = TwinJournal()
>>> journal.applied("e1", "record", twin=None)
>>> journal.records["e1"], journal.folded.get("e1")
(['record'], None)
>>> journal.checkpointed("e1")
>>> journal.records.get("e1")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twinstream.models.twin import Twin

MAX_JOURNAL = 10_000  # records per twin between checkpoints before they are folded into bytes of its own


class TwinJournal:
    """Per twin: the records applied since its last checkpointed state (cleared at every checkpoint)."""

    def __init__(self) -> None:
        self.records: dict[str, list[Any]] = {}
        self.folded: dict[str, bytes] = {}  # a twin's state with its records folded in, not in the table

    def checkpointed(self, entity_id: str) -> None:
        """The twin's current state is its checkpointed (or just loaded) one: nothing applied since."""
        self.records.pop(entity_id, None)
        self.folded.pop(entity_id, None)

    def applied(self, entity_id: str, record: Any, twin: Twin | None) -> None:
        """``record`` changed the twin; a processor run without checkpoints (benchmarks) folds every 10,000."""
        done = self.records.setdefault(entity_id, [])
        done.append(record)
        if len(done) > MAX_JOURNAL and twin is not None:
            self.folded[entity_id] = twin.to_bytes()
            del self.records[entity_id]

    def forget(self, entity_id: str) -> None:
        """The twin left memory (evicted, or its undo failed): nothing to undo any more."""
        self.checkpointed(entity_id)

    def clear(self) -> None:
        self.records.clear()
        self.folded.clear()
