# One image for every process; the command picks it (collector run, writer run, replayer run, ha-sim run).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY local local
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home homeiq
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER homeiq
ENV LOG_FORMAT=json PYTHONUNBUFFERED=1
# Exec form in compose: the Python process is PID 1 and handles SIGTERM itself.
CMD ["collector", "--help"]
