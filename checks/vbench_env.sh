#!/usr/bin/env bash
# Build .venv-vbench: the published VBench package (vbench 0.1.5) in an environment of its own, because it pins
# transformers 4.33.2 and numpy < 2 (the project's .venv has transformers 5 and numpy 2). vipo calls it as a
# subprocess (vipo/eval/vbench_runner.py); nothing of vipo is installed here.
#   bash checks/vbench_env.sh [PYTHON]            install the exact pins of checks/vbench-requirements.txt
#   bash checks/vbench_env.sh [PYTHON] --relock   resolve vbench==0.1.5 afresh and rewrite the pins
# ~2 minutes and ~6.7 GB (torch 2.14.1 + torchvision 0.29.1 is a CUDA build; it runs on the CPU too).
# VBench's model weights are not fetched here: they come from ~/.cache/vbench (or VBENCH_CACHE_DIR,
# or vbench.cache_dir=...); see docs/vbench.md for the file each dimension reads.
set -euo pipefail
PY=${1:-python3}
RELOCK=${2:-}
ENV=${VBENCH_ENV:-.venv-vbench}
REQ=checks/vbench-requirements.txt
test -d "$ENV" || "$PY" -m venv "$ENV"
P=$ENV/bin/python
$P -m pip install -q --upgrade pip
if [ "$RELOCK" = "--relock" ]; then
    $P -m pip install -q torch==2.14.1 torchvision==0.29.1
    $P -m pip install -q vbench==0.1.5
    { sed -n '/^#/p' "$REQ"; $P -m pip freeze | grep -v -e '^-e' -e ' @ '; } > "$REQ.new"
    mv "$REQ.new" "$REQ"
    echo "rewrote $REQ ($(grep -vc '^#' "$REQ") pins)"
else
    # torch first: with the pins below it resolves to the same wheels; --no-deps keeps pip from adding anything
    $P -m pip install -q --no-deps -r "$REQ"
fi
$P -c "import vbench, torch, torchvision, decord, cv2; from vbench import VBench; \
print('vbench', vbench.__file__, 'torch', torch.__version__, 'torchvision', torchvision.__version__)"
