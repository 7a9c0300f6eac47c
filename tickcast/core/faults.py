"""Named fault points, for the fault-injection tests (``tests/faults/``) only.

A part of the platform calls ``fault_point(FaultPoint.X)`` where a crash would be the most
awkward (between two writes that a restart must reconcile). Nothing happens there unless the
environment variable ``TICKCAST_FAULT`` names that point::

    TICKCAST_FAULT="ingest.ticks.after_append:kill"            # SIGKILL at the first pass
    TICKCAST_FAULT="scorer.after_store_write:raise:after=3"     # raise FaultInjected at the 3rd pass
    TICKCAST_FAULT="a:kill,b:raise"                             # several points, comma-separated

``kill`` is SIGKILL of the process (of its whole process group when the process leads one, as the
tests start the jobs, so a Spark driver's JVM dies with it); ``raise`` raises ``FaultInjected``
where the point stands. A pass is counted per point and per process.

The variable is read once per process, at the first pass of any point (not at import), so a point
costs one dict lookup when it is off. It is not a field of ``Settings`` on purpose: it is a test
hook, not a way to configure the platform, and the points live in code (the alert dispatcher, a
Spark ``foreachBatch``) that holds no settings. An unknown point name or action is an error, so a
test cannot silently inject nothing.

Every point is a member of ``FaultPoint`` (the one list the harness iterates), and
``tests/core/test_faults.py`` checks that each is called somewhere in the code.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from enum import StrEnum

ENV_VAR = "TICKCAST_FAULT"


class FaultPoint(StrEnum):
    # spark_jobs/ingest/ticks.py: a batch planned (offsets/N in the checkpoint), nothing of it
    # written (no Delta commit, no feed watermarks): its restart replays the same offsets.
    INGEST_TICKS_BATCH_START = "ingest.ticks.batch_start"
    # spark_jobs/ingest/ticks.py: the batch's ticks appended to Delta, its quarantine append,
    # commit and feed watermarks not yet (and no bar folded from them).
    INGEST_TICKS_AFTER_APPEND = "ingest.ticks.after_append"
    # spark_jobs/ingest/ticks.py: every Delta commit of the batch done, its feed watermarks not saved.
    INGEST_TICKS_BEFORE_WATERMARKS = "ingest.ticks.before_watermark_save"
    # spark_jobs/ingest/stages.py: one interval's bar MERGE committed, the next interval's not.
    INGEST_BARS_AFTER_MERGE = "ingest.bars.after_merge"
    # spark_jobs/ingest/stages.py: an interval's features MERGEd into Delta, not yet pushed to Feast.
    INGEST_FEATURES_BEFORE_PUSH = "ingest.features.before_push"
    # spark_jobs/ingest/progress.py: the process's query caught up and idle (Spark's idle event),
    # its last batch committed (commits/N) and the next not planned: the committed point.
    INGEST_QUERY_IDLE = "ingest.query_idle"
    # tickcast/scoring/live_job.py: a cycle scored, nothing of it published.
    SCORER_AFTER_SCORE = "scorer.after_score"
    # tickcast/scoring/live_job.py: predictions in the online store, not yet on Kafka.
    SCORER_AFTER_STORE_WRITE = "scorer.after_store_write"
    # tickcast/scoring/live_job.py: before the open bars and offsets are saved.
    SCORER_BEFORE_CHECKPOINT = "scorer.before_checkpoint_save"
    # tickcast/alerts/engine.py: a batch's alerts in the outbox, its Kafka offsets not committed.
    ALERTS_AFTER_OUTBOX_WRITE = "alerts.after_outbox_write"
    # tickcast/alerts/delivery.py: a provider accepted a message, the outbox not told.
    ALERTS_AFTER_CHANNEL_SEND = "alerts.after_channel_send"


ACTIONS = ("kill", "raise")


class FaultInjected(RuntimeError):
    """Raised at a fault point configured with ``raise``."""


@dataclass(frozen=True)
class Fault:
    point: FaultPoint
    action: str
    # The pass (1-based) at which it fires; earlier passes go by.
    after: int = 1


def parse_faults(spec: str) -> dict[FaultPoint, Fault]:
    """``TICKCAST_FAULT``'s value: ``point:action[:after=N]``, comma-separated."""
    faults: dict[FaultPoint, Fault] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition(":")
        try:
            point = FaultPoint(name)
        except ValueError:
            raise ValueError(f"{ENV_VAR}: unknown fault point {name!r}; known: "
                             f"{', '.join(p.value for p in FaultPoint)}") from None
        action, _, option = rest.partition(":")
        if action not in ACTIONS:
            raise ValueError(f"{ENV_VAR}: {item!r}: the action must be one of {', '.join(ACTIONS)}")
        after = 1
        if option:
            key, _, value = option.partition("=")
            if key != "after" or not value.isdigit() or int(value) < 1:
                raise ValueError(f"{ENV_VAR}: {item!r}: the option must be after=N with N >= 1")
            after = int(value)
        faults[point] = Fault(point, action, after)
    return faults


_lock = threading.Lock()
_faults: dict[FaultPoint, Fault] | None = None
_passes: dict[FaultPoint, int] = {}


def _configured() -> dict[FaultPoint, Fault]:
    global _faults
    if _faults is None:
        with _lock:
            if _faults is None:
                _faults = parse_faults(os.environ.get(ENV_VAR, ""))
    return _faults


def reset() -> None:
    """Forget the parsed variable and the pass counts (for in-process tests of this module)."""
    global _faults
    with _lock:
        _faults = None
        _passes.clear()


def fault_point(point: FaultPoint) -> None:
    """A named point where the tests may kill the process or raise; a no-op otherwise."""
    fault = _configured().get(point)
    if fault is None:
        return
    with _lock:
        _passes[point] = passes = _passes.get(point, 0) + 1
    if passes != fault.after:
        return
    message = f"fault injected at {point.value} (pass {passes})"
    if fault.action == "raise":
        raise FaultInjected(message)
    # Said on stderr, unbuffered, so a test's log shows where the process died.
    os.write(2, f"\n{message}: SIGKILL\n".encode())
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
