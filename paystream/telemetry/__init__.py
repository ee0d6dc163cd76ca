"""Operating a worker: Prometheus metrics, health and readiness on one HTTP port, progress logs.

docs/operations.md ("Metrics", "Health and readiness") lists what is served.
"""
