#!/bin/sh
# A stand-in for python:3.11-slim-bookworm built from Debian packages, for machines that reach a
# Debian mirror but no container registry (the image test passes it as PYTHON_IMAGE).
#
#   python-base.sh <out.tar>    a root filesystem tarball for `podman import`
#
# Bookworm's python3 is 3.11. Like the official image it has `python`, `pip` and `pip3` in
# /usr/local/bin, pip and setuptools installed with their own RECORD in /usr/local (so the
# runtime stage's `pip uninstall` works the same on both), no EXTERNALLY-MANAGED marker, and
# ca-certificates, netbase and tzdata. Needs root and mmdebstrap.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 <out.tar>" >&2; exit 64; }

# Debian disables ensurepip for its system python; its pip wheel installs pip the same way.
pip_from_wheel='wheel=$(ls /usr/share/python-wheels/pip-*.whl) &&
  python3 "$wheel/pip" install --quiet --no-index --find-links /usr/share/python-wheels pip setuptools'

mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
  --include=python3,python3-venv,ca-certificates,netbase,tzdata \
  --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' \
  --customize-hook="chroot \"\$1\" env -i PATH=/usr/bin:/bin PIP_ROOT_USER_ACTION=ignore \
    sh -c '$pip_from_wheel'" \
  --customize-hook='ln -sf /usr/bin/python3 "$1"/usr/local/bin/python' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/usr/share/doc/*' \
  bookworm "$1"
