#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a developer's: installs what is missing, then runs
# `cargo test` over the workspace. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

# wgpu conformance tests run on the CPU through Mesa's lavapipe (Vulkan) driver.
if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && [ ! -e /usr/share/vulkan/icd.d/lvp_icd.json ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
    else
        echo "error: Mesa's lavapipe is missing: run 'sudo apt-get install mesa-vulkan-drivers libvulkan1'" >&2
        exit 1
    fi
fi

# The shared fixtures live beside the repository unless STRATA_FIXTURES says otherwise.
export STRATA_FIXTURES="${STRATA_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
if [ ! -d "$STRATA_FIXTURES/tiny" ]; then
    echo "error: fixtures not found at $STRATA_FIXTURES (set STRATA_FIXTURES)" >&2
    exit 1
fi

# The real checkpoints (SmolLM2, Qwen2.5, Gemma 3, MiniLM) the real-model tests read, fetched
# and SHA-256-checked by the shared script (idempotent: nothing is downloaded when they are there).
export STRATA_MODELS="${STRATA_MODELS:-$HOME/.cache/strata/models}"
"$STRATA_FIXTURES/fetch-models.sh" "$STRATA_MODELS"

# lavapipe probes a window system at start-up; a private runtime dir silences its warning.
XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
export XDG_RUNTIME_DIR
chmod 700 "$XDG_RUNTIME_DIR"

cargo test --workspace --locked "$@"
