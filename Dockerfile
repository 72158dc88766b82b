# signout-worker image: `docker build -t signout-worker .`
#
# Both stages use the same base image. Pin it by digest for a reproducible build:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
# The builder installs the locked dependencies and the project's wheel into /opt/venv through
# deploy/docker/install.sh (the test suite runs the same script); the runtime stage copies only
# that virtualenv: no compiler, no uv, no build or download caches.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
#checkov:skip=CKV_DOCKER_7:the base is a fixed tag (or a digest) passed in the PYTHON_IMAGE build arg

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# uv, pinned by version and hash; it never runs in the final image.
COPY deploy/docker/build-tools.txt deploy/docker/build-constraints.txt deploy/docker/install.sh \
     deploy/docker/
RUN pip install --no-cache-dir --require-hashes --requirement deploy/docker/build-tools.txt
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN sh deploy/docker/install.sh deps /opt/venv
COPY README.md ./
COPY worker/ worker/
RUN sh deploy/docker/install.sh project /opt/venv

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="signout-worker" \
      org.opencontainers.image.description="Signs compromised users out of Amazon Cognito from Kafka requests" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=builder /opt/venv /opt/venv
# Any numeric non-root uid works (Kubernetes sets runAsUser); no home directory is needed.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# For plain `docker run`; Kubernetes uses the Deployment's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SIGNOUT_HTTP__PORT', '8080') + '/healthz', timeout=3)"]
# Exec form: the worker is PID 1 and receives SIGTERM itself (it drains, then exits 0).
ENTRYPOINT ["signout-worker"]
CMD ["run"]
