"""Streaming ingest: Kafka ``ticks`` -> Delta ``ticks``/``quarantine`` -> bars -> features.

Exactly-once by construction:

* Kafka offsets are checkpointed by Spark; a restarted job replays at most the last,
  uncommitted micro-batch.
* Every Delta write of a batch is idempotent: appends carry ``txnAppId``/``txnVersion``
  and MERGEs the same through session confs, so a replayed batch is skipped table by table.
* What a replayed batch *decides* is the same as the first time: duplicates are judged
  against ticks stored by other batches, lateness against the feed watermarks saved by
  the previous batch, and "too far in the future" against the Kafka record timestamp.

Bars are folded from per-batch partials with an order-independent MERGE, so a history
replayed next to the live feed still lands in full; lateness is per feed (source and
symbol), so one feed's clock never makes another feed's ticks late.

``job`` runs the query and reads each micro-batch as its list of stages; ``stages`` holds
them and what they share; ``watermarks`` the feed watermarks; ``progress`` the file that
`tickcast status` reads.
"""

from spark_jobs.ingest.job import run

__all__ = ["run"]
