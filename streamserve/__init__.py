"""streamserve: a streaming inference consumer (Kafka in, Redis features, XGBoost, Kafka out)."""

__version__ = "0.1.0"
