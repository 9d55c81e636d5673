#!/usr/bin/env bash
# Run a command against the tapwatch code of an earlier commit, for before/after comparisons:
#   bench/at_commit.sh COMMIT python bench/bench_service.py --windows 5000 --latency-s 10
# The commit's tree is exported (git archive) to a temporary directory, its package folders are mapped
# under tapwatch/ there, and PYTHONPATH puts that mapping ahead of the editable install, so the command
# (the current script) and every service it starts import the old code. Nothing in the working tree changes.
set -euo pipefail
commit=$1
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/tapwatch-at-XXXXXX")
trap 'rm -rf "$dir"' EXIT
git -C "$repo" archive "$commit" | tar -x -C "$dir"
mkdir -p "$dir/pkg/tapwatch"
for d in features bus capture inference alerting models app console; do
  if [ -d "$dir/$d" ]; then ln -s "$dir/$d" "$dir/pkg/tapwatch/$d"; fi
done
echo "code of $(git -C "$repo" rev-parse --short "$commit") from $dir" >&2
# a report can say which code it measured
TAPWATCH_CODE_AT=$(git -C "$repo" rev-parse --short "$commit") PYTHONPATH="$dir/pkg${PYTHONPATH:+:$PYTHONPATH}" "$@"
