"""Message models and the topic catalog (pure pydantic, no I/O)."""

from twinstream.schemas.dead_letter import DeadLetter, RejectReason
from twinstream.schemas.gaps import Gap, GapKind
from twinstream.schemas.prediction import Prediction
from twinstream.schemas.telemetry import SCHEMA_VERSION, Telemetry
from twinstream.schemas.topics import GAPS, PREDICTIONS, SYNTHETIC, TELEMETRY, TELEMETRY_DLQ, TopicSpec, topic_catalog

__all__ = [
    "DeadLetter",
    "GAPS",
    "Gap",
    "GapKind",
    "PREDICTIONS",
    "Prediction",
    "RejectReason",
    "SCHEMA_VERSION",
    "SYNTHETIC",
    "TELEMETRY",
    "TELEMETRY_DLQ",
    "Telemetry",
    "TopicSpec",
    "topic_catalog",
]
