"""The local stack: a real Kafka broker (Maven Central jars) and a real PostgreSQL server (Debian packages)."""
