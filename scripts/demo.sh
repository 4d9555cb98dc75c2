#!/usr/bin/env bash
# The main job: bring the example fleet up, show each VM answering on its forwarded port, run a
# second `up` that must change nothing, then destroy it. Uses the real `pulumi` CLI when it is on
# PATH, else the engine-protocol driver from tests/engine (it says which).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec node bin/scripts/fleet-demo.js "$@"
