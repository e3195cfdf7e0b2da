"""Export JSON Schemas of the message models for non-Python consumers.

The files in ``schemas/json/`` are generated, never edited by hand; a unit test
checks they match the models (``python -m twinstream.schemas.export`` rewrites them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from twinstream.schemas.dead_letter import DeadLetter
from twinstream.schemas.gaps import Gap
from twinstream.schemas.prediction import Prediction
from twinstream.schemas.telemetry import Telemetry

MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "telemetry": Telemetry,
    "prediction": Prediction,
    "dead_letter": DeadLetter,
    "gap": Gap,
}
JSON_DIR = Path(__file__).parent / "json"


def render_schemas() -> dict[str, str]:
    """File name -> JSON Schema text, for every message model."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in MESSAGE_MODELS.items()
    }


def write_schemas(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for path in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else JSON_DIR):
        print(path)
