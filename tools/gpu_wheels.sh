#!/usr/bin/env bash
# Prepare .whl/ for a lent GPU machine that cannot download anything (see bench/gpu.sh):
# a pure deepspeed wheel built here, and the pure / cp312 wheels it needs beyond that image.
# --compile needs nothing more: Inductor ships with torch, and CUDA builds of torch bring Triton
# (bench/gpu.sh checks it first and says so if it is missing; the trainer then runs eager).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PY=${PYTHON:-.venv/bin/python}
"$PY" -m pip wheel --no-deps --no-build-isolation -w .whl "deepspeed==0.19.8"
"$PY" -m pip download --no-deps -d .whl hjson annotated-types typing-inspection "pydantic>=2" submitit cloudpickle "typing_extensions>=4.16"
"$PY" -m pip download --no-deps -d .whl --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 pydantic-core
ls -la .whl
