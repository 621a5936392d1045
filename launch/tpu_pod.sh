#!/usr/bin/env bash
# Runs jaxvit on every worker of a Cloud TPU VM pod slice (each worker is one JAX process).
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/deit_small_imagenet.py --workdir=gs://bucket/runs/deit_s \
#       --config.data.data_dir=gs://bucket/tensorflow_datasets
# The repository is copied to every worker, installed there, and started with --distributed, so
# jax.distributed.initialize() reads the pod's topology. The workdir must be shared (a GCS bucket).
set -euo pipefail
tpu=$1; zone=$2; shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
gcloud compute tpus tpu-vm scp --recurse "$repo" "$tpu":~/jaxvit --zone="$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command "
  cd ~/jaxvit && pip install -q 'jax[tpu]' -e '.[data]' &&
  python -m jaxvit.main --distributed $(printf '%q ' "$@")"
