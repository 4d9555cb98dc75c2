#!/usr/bin/env bash
# The project's test command: set up this machine, then run every test (unit, integration with
# real QEMU guests, and the engine-protocol tests).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec npx jest --runInBand "$@"
