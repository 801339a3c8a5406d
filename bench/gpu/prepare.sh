#!/usr/bin/env bash
# Prepare bench/gpu/check.py for the offline GPU machine (../shared/gpu/README.md): into bench/gpu/carry/
# (git-ignored, carried with the working tree: `run` with carry ["bench/gpu/carry"], 64 MiB in all) go
#   wheels/     Python 3.12 wheels of what the GPU image lacks, at the versions of this machine's .venv
#   tokenizer/  SmolLM2's tokenizer (the embedded model's 98 MB GGUF cannot travel: check.py builds random
#               weights of real shapes there)
#   e2e.jsonl   E2E rows from ../shared/data, seed_recipe.py from ../shared/bench
# Then, on the GPU machine: bash bench/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=bench/gpu/carry
PY=.venv/bin/python
rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/tokenizer"

# what lmtune train / serve, TRL and the fast tests import that the image (torch, accelerate, transformers 5.17,
# sacrebleu, tokenizers, safetensors, pandas, pyarrow, matplotlib, tensorboard, scikit-learn, pytest, numpy,
# jinja2) does not have, or has at another version
PACKAGES="transformers peft trl accelerate datasets dill multiprocess xxhash fsspec huggingface-hub
  tokenizers safetensors pydantic pydantic-core annotated-types typing-inspection typing-extensions pyyaml gguf
  datasketch nltk absl-py regex joblib click tqdm fastapi starlette uvicorn h11 anyio sniffio idna
  openai httpx httpcore certifi distro jiter pexpect ptyprocess sentencepiece"
pinned=$($PY - $PACKAGES <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
PY
)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_24_x86_64 --platform any -d "$CARRY/wheels" $pinned
# rouge-score is an sdist only: a pure wheel built here
$PY -m pip wheel -q --no-deps -w "$CARRY/wheels" rouge-score==0.1.2
# bitsandbytes (QLoRA) holds one library per CUDA version (43 MB): keep the CUDA 13 one and the CPU one
bnb=$(mktemp -d)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_28_x86_64 -d "$bnb" bitsandbytes
wheel=$(basename "$bnb"/bitsandbytes-*.whl); dest=$(realpath "$CARRY/wheels")
(cd "$bnb" && mkdir x && cd x && unzip -q "../$wheel" \
  && find bitsandbytes -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cuda130.so' ! -name 'libbitsandbytes_cpu.so' -delete \
  && zip -qr "$dest/$wheel" .)
rm -rf "$bnb"

tok=$($PY -c "from lmtune.models import resolve; print(resolve('smollm2-135m-instruct'))")
for f in config.json tokenizer.json tokenizer_config.json chat_template.jinja generation_config.json special_tokens_map.json; do
  [ -f "$tok/$f" ] && cp "$tok/$f" "$CARRY/tokenizer/"
done
$PY - "$CARRY/e2e.jsonl" <<'PY'
import csv, json, random, sys
rows = [{"prompt": r["mr"], "completion": r["ref"]} for r in csv.DictReader(open("../shared/data/e2e/devset.csv"))]
random.Random(0).shuffle(rows)  # the file is sorted by input
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows[:2100]))
PY
cp ../shared/bench/seed_recipe.py "$CARRY/"
du -sh "$CARRY" "$CARRY/wheels"
