"""Process management for the whole platform: supervisord config and control,
``setup``/``up``/``down`` orchestration and ``status`` reporting."""

from tickcast.catalog.progress import progress_path, read_progress
from tickcast.platform.control import down, setup, up, urls
from tickcast.platform.status import collect_status, kafka_lag
from tickcast.platform.supervisor import (
    PlatformError,
    Supervisor,
    programs,
    render_config,
)

__all__ = [
    "PlatformError", "Supervisor", "collect_status", "down", "kafka_lag", "programs",
    "progress_path", "read_progress", "render_config", "setup", "up", "urls",
]
