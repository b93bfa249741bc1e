#!/usr/bin/env bash
# Launch one run on every host of a Cloud TPU pod slice (multi-host: jax.distributed).
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [EXTRA FLAGS...]
# WORKDIR must be shared storage (e.g. gs://bucket/run) so every host sees the same checkpoints.
# Untested here (no TPU reachable): the same code path runs on 8 fake CPU devices in the tests.
set -euo pipefail
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
cmd="cd ~/physics_lm && python -m physics_lm.main --config=${config} --workdir=${workdir} \
--config.mesh.distributed=True $*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$cmd"
