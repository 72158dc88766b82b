#!/bin/sh
# Install signout-worker into a virtualenv the way the image does. The Dockerfile's RUN steps and
# tests/deploy/test_image.py both call this script, so what the test runs is what the image holds.
#
#   install.sh tools            uv (build-tools.txt, pinned by hash) with the interpreter's pip
#   install.sh deps <venv>      the locked runtime dependencies (uv.lock), hash-checked wheels only
#   install.sh project <venv>   build the project's wheel (hatchling pinned by hash) and install it
#
# Run from the source tree (pyproject.toml, uv.lock, README.md, worker/). Needs `uv` (UV=...) and a
# Python 3.11+ (PYTHON=..., default python3). Leaves no caches behind, and no pip or setuptools in
# the virtualenv: uv installs into it.
#
# Behind a TLS-intercepting proxy, a CA bundle at $CA_BUNDLE (default /run/secrets/ca, where
# `RUN --mount=type=secret,id=ca` puts it) is trusted for the downloads of this run only.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
UV=${UV:-uv}
PYTHON=${PYTHON:-python3}
CA_BUNDLE=${CA_BUNDLE:-/run/secrets/ca}
export UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
if [ -s "$CA_BUNDLE" ]; then
  export SSL_CERT_FILE="$CA_BUNDLE" PIP_CERT="$CA_BUNDLE"
fi

usage() {
  echo "usage: $0 tools | deps <venv> | project <venv>" >&2
  exit 64
}

[ $# -ge 1 ] || usage
if [ "$1" = tools ]; then
  [ $# -eq 1 ] || usage
  "$PYTHON" -m pip install --quiet --require-hashes --requirement "$here/build-tools.txt"
  exit 0
fi
[ $# -eq 2 ] || usage
venv=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case $1 in
  deps)
    # Exactly the lock's runtime set: no dev group, no project, every artefact checked by hash.
    "$UV" export --frozen --no-dev --no-emit-project --format requirements.txt \
      --output-file "$work/requirements.txt" --quiet
    "$PYTHON" -m venv --without-pip "$venv"
    # Wheels only: the runtime stage has no compiler, so nothing may need one.
    "$UV" pip install --quiet --python "$venv/bin/python" --require-hashes --no-deps \
      --only-binary :all: --requirement "$work/requirements.txt"
    ;;
  project)
    "$UV" build --wheel --out-dir "$work/dist" --python "$PYTHON" \
      --build-constraints "$here/build-constraints.txt" --require-hashes --quiet
    # The dependencies are already there (deps); the wheel adds only the project itself.
    "$UV" pip install --quiet --python "$venv/bin/python" --no-deps --no-index "$work"/dist/*.whl
    # Fails when the lock no longer satisfies the wheel's declared requirements.
    "$UV" pip check --quiet --python "$venv/bin/python"
    ;;
  *)
    usage
    ;;
esac
