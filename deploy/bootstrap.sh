#!/usr/bin/env bash
# Create HubbleCLIP's work pools and limits on the Prefect server at $PREFECT_API_URL, then deploy
# every flow. Idempotent: rerun after changing a prefect*.yaml.
#
#   bash deploy/bootstrap.sh process       # pools `process` + `gpu` (process workers)
#   bash deploy/bootstrap.sh docker        # pools `docker-cpu` + `docker-gpu`
#   bash deploy/bootstrap.sh kubernetes    # pools `kubernetes` + `kubernetes-gpu`
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-process}"
export HUBBLECLIP_HOME="${HUBBLECLIP_HOME:-$PWD}"

case "$target" in
  process)
    prefect work-pool create process --type process --overwrite
    prefect work-pool create gpu --type process --overwrite
    gpu_pool=gpu
    file=deploy/prefect.yaml
    ;;
  docker)
    prefect work-pool create docker-cpu --type docker --overwrite
    prefect work-pool create docker-gpu --type docker --overwrite \
      --base-job-template deploy/docker/base-job-template-gpu.json
    gpu_pool=docker-gpu
    file=deploy/prefect.docker.yaml
    ;;
  kubernetes)
    prefect work-pool create kubernetes --type kubernetes --overwrite \
      --base-job-template deploy/kubernetes/base-job-template-cpu.json
    prefect work-pool create kubernetes-gpu --type kubernetes --overwrite \
      --base-job-template deploy/kubernetes/base-job-template-gpu.json
    gpu_pool=kubernetes-gpu
    file=deploy/prefect.kubernetes.yaml
    ;;
  *)
    echo "usage: $0 process|docker|kubernetes" >&2
    exit 2
    ;;
esac

# One training run at a time on the GPU pool (each training deployment also has concurrency 1).
prefect work-pool set-concurrency-limit "$gpu_pool" 1
prefect --no-prompt deploy --all --prefect-file "$file"
