#!/usr/bin/env bash
# The first command of the README: set up .venv, then a short continual fine-tuning run on the bundled
# WordNet stream (configs/default.toml: random replay, predicted by lda over the memory; about 1.5
# minutes on a quiet 2-core machine), printing the accuracy matrix, ACC / forgetting / BWT and the
# head's ACC beside the memory predictor's. Results, plots and a resumable checkpoint
# land in runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bash scripts/bootstrap.sh
config="${1:-configs/default.toml}"
shift $(( $# > 0 ? 1 : 0 ))  # what follows the config goes to 'rehearsal run' (e.g. --set seed=1)
# The run's memory is encrypted. Without a key in the environment, make one explicitly (kept in runs/,
# git-ignored) so that an interrupted run can resume; the library itself never writes a master key.
if [ -z "${REHEARSAL_MASTER_KEY:-}" ]; then
    mkdir -p runs
    [ -f runs/master.key ] || .venv/bin/rehearsal keygen --out runs/master.key > /dev/null
    REHEARSAL_MASTER_KEY="$(cat runs/master.key)"
    export REHEARSAL_MASTER_KEY
fi
.venv/bin/rehearsal run "$config" --resume "$@"
