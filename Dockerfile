# One image for every process; the compose command picks it (collector run, writer run, replayer run).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY local local
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home homeiq \
    && mkdir -p /var/lib/homeiq/spool && chown -R homeiq /var/lib/homeiq
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER homeiq
WORKDIR /var/lib/homeiq
ENV LOG_FORMAT=json PYTHONUNBUFFERED=1 COLLECTOR_SPOOL_DIR=/var/lib/homeiq/spool
# Exec form: the Python process is PID 1 and handles SIGTERM itself (finish or abandon the batch, exit 0).
CMD ["collector", "--help"]
