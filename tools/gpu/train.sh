#!/bin/bash
# On the machine, after unpack.sh: check every image against data.sha256, then train the candidates
# side by side, each given as one argument "NAME TRAIN-OPTIONS...", within BUDGET seconds (the first
# argument). A run still going at the budget is stopped like Ctrl-C (its checkpoint stays on the
# machine, its log comes back: resume it there with `--resume runs/gpu/NAME` in a later call). Models come back as
# $OUT/NAME.gz.aa, .ab, ... and logs as $OUT/NAME.log.txt.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
T0=$(date +%s)
BUDGET=$1; shift
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT" runs/gpu
python3 -c "import torch, albumentations, efficientnet_lite_pytorch, melanoma; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO GPU')" || exit 1
# DataLoader workers pass batches through shared memory, which containers often keep small
[ "$(df --output=size -k /dev/shm | tail -1)" -lt 8000000 ] && mount -o remount,size=16G /dev/shm 2>/dev/null
HERE=$PWD; (cd "$(cat .dev/root.txt)" && sha256sum -c --quiet "$HERE/.dev/data.sha256") || { echo "checksums differ"; exit 1; }
echo "images checked: $(wc -l < .dev/data.sha256), $(( $(date +%s) - T0 )) s"
WORKERS=$(( $(nproc) / $# - 1 ))
NAMES=()
for c in "$@"; do
  set -- $c; name=$1; shift
  NAMES+=($name)
  timeout -s INT $(( BUDGET - ($(date +%s) - T0) )) env OMP_NUM_THREADS=2 python3 -m melanoma train --out runs/gpu/$name \
    --workers $WORKERS "$@" > runs/gpu/$name.log 2>&1 &
  echo "$name: $WORKERS workers: $*"
done
wait
for name in "${NAMES[@]}"; do
  d=runs/gpu/$name
  # files over a few MB do not come back from a call: the model in gzip'd 6 MB parts (cat NAME.gz.* | gunzip > NAME.safetensors)
  [ -f $d/model.safetensors ] && gzip -1 -c $d/model.safetensors | split -b 6000000 - "$OUT/$name.gz."
  tr '\r' '\n' < $d.log | grep -v "batch/s\|s/batch\|img/s\|s/img" > "$OUT/$name.log.txt"
  echo "== $name"; tail -3 "$OUT/$name.log.txt"
done
echo "done in $(( $(date +%s) - T0 )) s"
