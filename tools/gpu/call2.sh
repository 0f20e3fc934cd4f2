#!/bin/bash
# Call 2 (right after call 1, on the same warm machine): unpack part B, check every training file's
# SHA-256 against the data's SHA256SUMS, then train the CANDIDATES (full fine-tunes) side by side for
# as many epochs as fit in this call's budget ($1 seconds); models and logs come back under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
T0=$(date +%s)
BUDGET=${1:-560}
[ -d /tmp/site ] && [ -f /root/mel/speed.txt ] || { echo "FRESH MACHINE: call 1's install and data are gone"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD/src
python3 -c "import tarfile; tarfile.open('.dev/b.tar.xz').extractall('/root/mel/data', filter='data')" || exit 1
HERE=$PWD; (cd /root/mel/data && sha256sum -c --quiet "$HERE/.dev/train.sha256") || { echo "checksums differ"; exit 1; }
echo "unpacked B and checked: $(find /root/mel/data -type f | wc -l) files, $(( $(date +%s) - T0 )) s"
SETUP=100; TAIL=45
EPOCHS=$(python3 tools/gpu/speed.py --budget $(( BUDGET - ($(date +%s) - T0) - SETUP - TAIL )) /root/mel/smoke1 /root/mel/smoke2 /root/mel/smoke3)
echo "epochs per run: $EPOCHS"
run() {
  local name=$1; shift
  OMP_NUM_THREADS=4 python3 -m melanoma train --data /root/mel/data --out /root/mel/$name --epochs $EPOCHS --patience 8 \
    --freeze-blocks 0 --batch-size 64 --workers 4 "$@" > /root/mel/$name.log 2>&1
  echo "$name exit $? after $(( $(date +%s) - T0 )) s"
  cp /root/mel/$name/model.safetensors $OUT/$name.safetensors
  cp /root/mel/$name.log $OUT/$name.log
}
# name and settings of each candidate, trained side by side (three fit the 16 cores: 1 + 4 workers each)
CANDIDATES=("r1 --lr 1e-3 --weight-decay 5e-2" "r2 --lr 1e-3" "r3 --lr 2e-3 --weight-decay 5e-2")
for c in "${CANDIDATES[@]}"; do run $c & done
wait
for c in "${CANDIDATES[@]}"; do n=${c%% *}; echo "== $n"; grep "val_auc\|saved\|early" $OUT/$n.log | tail -4; done
echo "call 2 done in $(( $(date +%s) - T0 )) s"
