# The chunkwise operator image: `python -m chunkwise.operator`, liveness on :8080/healthz,
# metrics on :9101/metrics.
#   docker build -t chunkwise:dev .
#   (tests: scripts/build-image builds it with buildah on a debootstrapped Debian base)
# BASE must provide python3 with the venv module (the official slim images do).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE NOTICE ./
COPY requirements/operator.txt requirements/
COPY operator/ operator/
# only the operator's dependencies: the [operator] extra, pinned with hashes in the lock
# file (scripts/lock), so every build installs the same bytes; chunkwise itself without its
# Django dependency, which the operator never imports
RUN python3 -m venv /opt/chunkwise \
 && /opt/chunkwise/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements/operator.txt \
 && /opt/chunkwise/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && /opt/chunkwise/bin/pip uninstall --yes --disable-pip-version-check pip setuptools \
 && find /opt/chunkwise -name __pycache__ -type d -prune -exec rm -rf {} +

FROM ${BASE}
# chunkwise.__version__, the commit and its time: scripts/build-image passes them
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="chunkwise operator" \
      org.opencontainers.image.source="https://github.com/chunkwise/chunkwise" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY LICENSE NOTICE /licenses/
COPY --from=build /opt/chunkwise /opt/chunkwise
# a named account for the UID: kopf asks who it runs as (getpass); USER covers any other
# UID a pod's securityContext picks
RUN groupadd --system --gid 65532 chunkwise \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin chunkwise
ENV PATH=/opt/chunkwise/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    USER=chunkwise
# numeric, so runAsNonRoot can verify it; the chart's default UID
USER 65532:65532
EXPOSE 8080 9101
ENTRYPOINT ["python3", "-m", "chunkwise.operator"]
CMD ["--liveness=http://0.0.0.0:8080/healthz"]
