# One image for every process; the compose command picks it (collector run, writer run, replayer run, ha-sim run).
# PYTHON_IMAGE: any Debian-based image with python3 (and its venv module); homeiq/python is one built locally from
# Debian's packages (scripts/stack-images) where no registry can be reached.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS build
LABEL homeiq.stage=build
RUN python3 -m venv /opt/homeiq
# Dependencies first, at the locked versions with their hashes: this layer is rebuilt only when the lock changes.
# EXTRA_CA_CERTS (PEM): CAs pip must trust behind a TLS-intercepting proxy; used in this build stage only.
ARG EXTRA_CA_CERTS=""
COPY requirements.lock /tmp/requirements.lock
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /tmp/ca.pem 2>/dev/null || true; \
        printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/ca.pem; export PIP_CERT=/tmp/ca.pem; \
    fi \
    && /opt/homeiq/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY src /src/src
# The build backend is the locked setuptools installed above: nothing unpinned is downloaded.
RUN /opt/homeiq/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation /src

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --no-create-home homeiq \
    && mkdir -p /var/lib/homeiq/spool && chown -R homeiq /var/lib/homeiq
COPY --from=build /opt/homeiq /opt/homeiq
USER homeiq
WORKDIR /var/lib/homeiq
ENV PATH=/opt/homeiq/bin:$PATH LOG_FORMAT=json PYTHONUNBUFFERED=1 COLLECTOR_SPOOL_DIR=/var/lib/homeiq/spool
# Healthy = ready: /readyz on the process's own port (METRICS_PORT), which says why when it is not.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('METRICS_PORT', '8001'), timeout=4)"]
# Exec form: the Python process is PID 1 and handles SIGTERM itself (finish or abandon the batch, exit 0).
CMD ["collector", "--help"]
