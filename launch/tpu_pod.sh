#!/usr/bin/env bash
# The positional form of launch/tpu_pod.py (which does the work; see its docstring):
#   launch/tpu_pod.sh [--dry_run] TPU_NAME ZONE CONFIG WORKDIR [EXTRA FLAGS...]
# copies this checkout to every worker of the pod slice, installs it, and runs the config on all
# workers with --config.mesh.distributed=True. WORKDIR must be shared storage (gs://bucket/run).
set -euo pipefail
dry=()
if [[ "${1:-}" == "--dry_run" ]]; then dry=(--dry_run); shift; fi
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
exec python3 "$(dirname "$0")/tpu_pod.py" --tpu="$tpu" --zone="$zone" "${dry[@]}" -- \
  --config="$config" --workdir="$workdir" "$@"
