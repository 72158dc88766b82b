# signout-worker image: `docker build -t signout-worker .`
#
# Both stages use the same base image. Pin it by digest for a reproducible build:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
# The builder installs the locked dependencies and the project's wheel into /opt/venv through
# deploy/docker/install.sh (the test suite runs the same script); the runtime stage copies only
# that virtualenv: no compiler, no uv, no pip, no build or download caches.
#
# Behind a TLS-intercepting proxy, hand the build your CA bundle as a secret: it is mounted for the
# install steps only and never stored in a layer:
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .
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
RUN --mount=type=secret,id=ca sh deploy/docker/install.sh tools
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=secret,id=ca sh deploy/docker/install.sh deps /opt/venv
COPY README.md ./
COPY worker/ worker/
RUN --mount=type=secret,id=ca sh deploy/docker/install.sh project /opt/venv

FROM ${PYTHON_IMAGE}
# The base's own pip and setuptools: nothing installs at runtime, so nothing to install with.
RUN python -m pip uninstall --quiet --yes --root-user-action=ignore pip setuptools wheel
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
