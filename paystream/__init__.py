"""paystream: a payment backend core on Kafka and PostgreSQL."""

__version__ = "0.1.0"
