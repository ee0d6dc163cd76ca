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
ENTRYPOINT ["paystream"]
CMD ["--help"]
