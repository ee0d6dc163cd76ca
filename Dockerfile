# paystream workers and commands. Used by docker-compose.yml; the local stack needs no Docker.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY paystream ./paystream
COPY schemas ./schemas
COPY topology ./topology
COPY workers ./workers
RUN pip install --no-cache-dir .
ENV PAYSTREAM_LOG_FORMAT=json
# A worker serves /metrics, /healthz and /readyz here. 0.0.0.0 because a scraper reaches it from outside the
# container; the container's network is the boundary (paystream's own default is 127.0.0.1).
ENV PAYSTREAM_METRICS_HOST=0.0.0.0 \
    PAYSTREAM_METRICS_PORT=9400
EXPOSE 9400
# Liveness of a worker (`paystream worker STAGE`). The image has no curl: Python's urlopen raises on a
# non-2xx answer or none, which exits 1. Other commands serve no /healthz: docker-compose.yml disables
# this check for the init job and gives the views their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PAYSTREAM_METRICS_PORT'], timeout=4); sys.exit(0 if r.status == 200 else 1)"]
ENTRYPOINT ["paystream"]
CMD ["--help"]
