"""Feed adapters: everything that puts ticks on the Kafka topic ``ticks``.

``synthetic`` simulates a market, ``replay`` turns bar files into ticks, ``barfiles``
parses the bar-file layouts Yahoo Finance exports. Nothing is imported eagerly that
would touch Kafka or the filesystem.
"""


class FeedError(RuntimeError):
    """A feed cannot run (broker unreachable, topic missing, bad arguments)."""
