"""What the ingest queries keep beside Spark's checkpoint: the app id of their Delta writes."""

from __future__ import annotations

import uuid
from pathlib import Path


def app_id(checkpoint: Path, query: str) -> str:
    """Identity of this checkpoint for idempotent Delta writes; a new checkpoint gets a new one."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    marker = checkpoint / "tickcast-app-id"
    if not marker.exists():
        marker.write_text(f"tickcast-{query}-{uuid.uuid4().hex[:12]}")
    return marker.read_text().strip()


def has_offsets(spark_checkpoint: Path) -> bool:
    """Whether Spark has planned a micro-batch in this checkpoint (then it resumes from it)."""
    offsets = spark_checkpoint / "offsets"
    return offsets.is_dir() and any(p.name.isdigit() for p in offsets.iterdir())
