#!/bin/bash
# Call 1: install the wheels, unpack part A of the training images, and smoke-train 3 runs
# side by side (2 epochs on a subset) to check the GPU path and measure the speed under contention.
set -uo pipefail
export PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
df -h /dev/shm | tail -1; mount -o remount,size=16G /dev/shm 2>/dev/null; df -h /dev/shm | tail -1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
mkdir -p /root/mel/data
python3 -c "import tarfile; tarfile.open('.dev/a.tar.xz').extractall('/root/mel/data', filter='data')" || exit 1
echo "unpacked A: $(find /root/mel/data -type f | wc -l) files, $(( $(date +%s) - T0 )) s"
python3 -c "import torch, albumentations, efficientnet_lite_pytorch, melanoma; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', 'albumentations', albumentations.__version__)" || exit 1
for i in 1 2 3; do
  OMP_NUM_THREADS=4 python3 -m melanoma train --data /root/mel/data --out /root/mel/smoke$i --epochs 2 --patience 2 --limit 1900 \
    --freeze-blocks 0 --batch-size 64 --workers 4 > /root/mel/smoke$i.log 2>&1 &
done
wait
for i in 1 2 3; do grep -v "it/s\|s/it\|img/s\|batch/s\|s/batch" /root/mel/smoke$i.log | tail -4; cp /root/mel/smoke$i.log $OUT/; done
python3 tools/gpu/speed.py /root/mel/smoke1 /root/mel/smoke2 /root/mel/smoke3 | tee /root/mel/speed.txt
nvidia-smi --query-gpu=memory.used --format=csv,noheader
echo "call 1 done in $(( $(date +%s) - T0 )) s"
