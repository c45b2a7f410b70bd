#!/usr/bin/env bash
# The README's two commands: `bash tools/run.sh demo` and `bash tools/run.sh test`.
# Both set up (or reuse) .venv with the CPU build of torch on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}
shift || true
bash tools/setup_env.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/hpc_bert/torch_extensions}
case "$what" in
  demo) exec python -m hpc_bert.demo "$@" ;;
  test)
    # pytest exits non-zero on any failure and with 5 when no test was collected.
    exec python -m pytest -q -p no:cacheprovider "$@" ;;
  *) echo "usage: bash tools/run.sh demo|test [args]" >&2; exit 2 ;;
esac
