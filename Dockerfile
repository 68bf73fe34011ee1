# The chunkwise operator image: `python -m chunkwise.operator`, liveness on :8080/healthz,
# metrics on :9101/metrics.
#   docker build -t chunkwise:dev .
#   (tests: scripts/build-image builds it with buildah on a debootstrapped Debian base)
# BASE must provide python3 with the venv module (the official slim images do).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# only the operator's dependencies: the [operator] extra, read from pyproject.toml (its one
# source); chunkwise itself without its Django dependency, which the operator never imports
RUN python3 -m venv /opt/chunkwise \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['operator']))" > /tmp/operator-requirements.txt \
 && /opt/chunkwise/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/operator-requirements.txt \
 && /opt/chunkwise/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && /opt/chunkwise/bin/pip uninstall --yes --disable-pip-version-check pip setuptools \
 && find /opt/chunkwise -name __pycache__ -type d -prune -exec rm -rf {} +

FROM ${BASE}
LABEL org.opencontainers.image.title="chunkwise operator" \
      org.opencontainers.image.source="https://github.com/chunkwise/chunkwise" \
      org.opencontainers.image.licenses="Apache-2.0"
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
