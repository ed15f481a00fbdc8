#!/usr/bin/env bash
# Submits the caching array and its finalize job: submit.sh NUM_TASKS
# with STEREO_STORE, STEREO_CORPUS (and optionally STEREO_BASE, STEREO_CHAT, STEREO_HOOK,
# STEREO_DTYPE, STEREO_BIN, STEREO_EXTRA_ARGS) in the environment; sbatch passes it on.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tasks=${1:?usage: submit.sh NUM_TASKS}
array=$(sbatch --parsable --array="0-$((tasks - 1))" "$here/cache-array.sbatch")
sbatch --dependency="afterok:${array%%;*}" "$here/finalize.sbatch"
echo "caching array $array ($tasks tasks), finalize after it"
