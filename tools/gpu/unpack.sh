#!/bin/bash
# On the machine, one call per part: install the wheels (when .dev/whl came along), then unpack the
# named parts of the training images where the sources file's relative paths expect them.
set -euo pipefail
T0=$(date +%s)
if [ -d .dev/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl
  echo "wheels installed in /tmp/site"
fi
ROOT=$(cat .dev/root.txt)
mkdir -p "$ROOT"
for part in "$@"; do
  tar -xf "$part" -C "$ROOT"
  echo "$part unpacked under $ROOT"
done
echo "$(find "$ROOT" -type f | wc -l) files under $ROOT, $(( $(date +%s) - T0 )) s"
