#!/usr/bin/env bash
# Starts N jaxvit processes on this machine (127.0.0.1), each with D CPU devices, talking through gloo.
#   launch/local.sh N D --config=configs/default.py --workdir=runs/two_procs [more jaxvit.main flags]
#   JAXVIT_MODULE=jaxvit.distill.save_logits launch/local.sh N D --config=... --out=runs/logits --topk=5
# Output of process i goes to <workdir or out>/process_<i>.log; process 0 also prints to the terminal.
set -euo pipefail
n=$1; devices=$2; shift 2
module=${JAXVIT_MODULE:-jaxvit.main}
workdir=$(printf '%s\n' "$@" | sed -n 's/^--\(workdir\|out\)=//p' | head -n 1)
[ -n "$workdir" ] || { echo "launch/local.sh: pass --workdir=DIR (or --out=DIR)" >&2; exit 2; }
mkdir -p "$workdir"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for ((i = 0; i < n; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" python -m "$module" "$@" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$n" --process_id="$i" \
    > "$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
tail -n +1 -f "$workdir/process_0.log" --pid="${pids[0]}" &
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
