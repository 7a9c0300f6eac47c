"""Where the data lives: Delta tables, Kafka topics, the online prediction store and the
feature store. The only place that knows paths, schemas and how to open them."""
