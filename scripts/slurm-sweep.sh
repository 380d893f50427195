#!/usr/bin/env bash
# Run an approxtrain sweep on a Slurm cluster: one job-array task per shard,
# then `approxtrain plot` once every task has ended.
#
#   scripts/slurm-sweep.sh FILE OUT [N]
#       on a login node: submits the array (tasks 0..N-1, each running
#       `approxtrain sweep FILE --shard $SLURM_ARRAY_TASK_ID/N --out OUT`) and
#       a plot job that waits for all of them (afterany: a failed shard does
#       not stop the report of the others). N defaults to the number of
#       entries of FILE: one entry per task.
#
#   sbatch --array=0-19 scripts/slurm-sweep.sh experiments/paper.toml runs/paper 20
#       the array alone (then `approxtrain plot runs/paper` by hand).
#   sbatch --array=3,7 scripts/slurm-sweep.sh experiments/paper.toml runs/paper 20
#       rerun shards 3 and 7 of 20: finished entries are skipped, an
#       interrupted one resumes from its checkpoint.
#
# OUT must be on a file system every node sees. Shards write disjoint run
# directories; a run directory is locked while an entry trains, so a shard
# submitted twice fails that entry instead of corrupting it.
# The binary: $APPROXTRAIN, else `approxtrain` on the PATH, else
# target/release/approxtrain of the submit directory (`cargo build --release`).
# Data: $APPROXTRAIN_DATA, exported to the tasks (see experiments/paper.toml).
#
# Adjust the resources to your cluster; the sweep uses the task's CPUs.
#SBATCH --job-name=approxtrain-sweep
#SBATCH --array=0-19
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail

usage() {
    echo "usage: $0 FILE OUT [N]   (see the comment at the top of $0)" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
file=$1
out=$2

# Inside a job, Slurm runs a copy of this script: find the binary from the
# directory the job was submitted from.
cd "${SLURM_SUBMIT_DIR:-.}"
bin=${APPROXTRAIN:-}
if [ -z "$bin" ]; then
    if command -v approxtrain >/dev/null 2>&1; then
        bin=approxtrain
    elif [ -x target/release/approxtrain ]; then
        bin=$PWD/target/release/approxtrain
    else
        echo "$0: no approxtrain binary: set APPROXTRAIN, put it on the PATH, or run 'cargo build --release'" >&2
        exit 1
    fi
fi
count=${3:-$("$bin" sweep "$file" --list | wc -l)}
case $count in
    '' | *[!0-9]* | 0)
        echo "$0: bad shard count '$count'" >&2
        exit 2
        ;;
esac
threads=(--threads "${SLURM_CPUS_PER_TASK:-1}")

if [ "${APPROXTRAIN_SLURM_PLOT:-}" = 1 ]; then
    # The plot job.
    exec "$bin" plot "$out"
elif [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    # One array task: shard I of N (0-based, I = the task id).
    if [ "$SLURM_ARRAY_TASK_ID" -ge "$count" ]; then
        echo "$0: task $SLURM_ARRAY_TASK_ID has no shard: the sweep has $count shards" >&2
        exit 2
    fi
    exec "$bin" "${threads[@]}" sweep "$file" --shard "$SLURM_ARRAY_TASK_ID/$count" --out "$out"
else
    # On a login node: submit the array, then the plot job after it.
    # Check the file before anything is queued.
    "$bin" sweep "$file" --list >/dev/null
    array=$(sbatch --parsable --export=ALL --array="0-$((count - 1))" "$0" "$file" "$out" "$count")
    array=${array%%;*}
    plot=$(sbatch --parsable --export=ALL,APPROXTRAIN_SLURM_PLOT=1 --array=0 \
        --dependency="afterany:$array" --job-name=approxtrain-plot --cpus-per-task=1 \
        --time=01:00:00 "$0" "$file" "$out" "$count")
    echo "submitted sweep array $array ($count tasks) and plot job ${plot%%;*}; results in $out/report.md"
fi
