#!/usr/bin/env bash
# Install the Debian packages the project uses when we can (root + apt-get); otherwise
# say in one line what happens instead. Idempotent: does nothing when all are present.
set -euo pipefail
missing=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "not root or no apt-get: skipping ${missing[*]} (Fashion-MNIST will be downloaded; PDF checks skip)"
fi
