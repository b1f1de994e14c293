#!/usr/bin/env bash
# The first command of the README: set up .venv, then a short continual fine-tuning run on the bundled
# WordNet stream (configs/default.toml; ~10 minutes on 2 cores), printing the accuracy matrix and
# ACC / forgetting / BWT. Results, plots and a resumable checkpoint land in runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bash scripts/bootstrap.sh
config="${1:-configs/default.toml}"
.venv/bin/rehearsal run "$config" --resume
