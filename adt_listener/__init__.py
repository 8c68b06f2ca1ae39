"""ADT ingest: the MLLP listener, the message store, the relay to Kafka and the normaliser."""
