"""Writes and checks ``schemas/*.schema.json``, the JSON Schemas generated from the models."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.streaming.messages import MODELS, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render_schemas() -> dict[str, str]:
    """File name → JSON text of each message's schema."""
    rendered = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://streamer.example/schemas/v{SCHEMA_VERSION}/{name}.schema.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        rendered[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate the schema files; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_schemas().items():
        path = folder / name
        path.write_text(text)
        paths.append(path)
    return paths


def stale_schemas(folder: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files missing or different from what the models generate."""
    return [
        name for name, text in render_schemas().items()
        if not (folder / name).exists() or (folder / name).read_text() != text
    ]
