"""Streaming ingest, two queries in one Spark application:

* ``ticks`` (``ticks.py``), the hot path: Kafka ``ticks`` -> parse and validate -> dedupe and
  lateness -> one idempotent append to Delta ``ticks`` (and to ``quarantine`` when a batch has
  rejects). Nothing else, so a tick is queryable in Delta one micro-batch after it arrives.
* ``bars`` (``bars.py``), downstream: Delta ``ticks`` read as a stream -> the ticks' quality
  audit -> bars (1m, 1d) -> features -> Feast online store -> ``quality_results``.

Exactly once by construction:

* Kafka offsets (``ticks``) and Delta versions (``bars``) are checkpointed by Spark; a
  restarted query replays at most its last, uncommitted micro-batch.
* Every Delta write of a batch is idempotent: appends carry ``txnAppId``/``txnVersion``
  and MERGEs the same through session confs, so a replayed batch is skipped table by table.
* What a replayed batch *decides* is the same as the first time: duplicates are judged
  against the msg_ids in the state store as of the batch before (``transforms.mark_first_copies``),
  lateness against the feed watermarks saved by the batch before (``watermarks``), and "too
  far in the future" against the Kafka record timestamp.

Bars are folded from per-batch partials with an order-independent MERGE, so a history
replayed next to the live feed still lands in full; lateness is per feed (source and
symbol), so one feed's clock never makes another feed's ticks late.

``job`` runs the two queries; ``stages`` holds the ``bars`` query's stages and what they share;
``checkpoints`` the app ids; ``progress`` the file that `tickcast status` reads.
"""

from spark_jobs.ingest.job import QUERIES, run

__all__ = ["QUERIES", "run"]
