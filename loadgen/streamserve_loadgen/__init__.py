"""Load generator for streamserve: produces synthetic events to a Kafka topic."""
