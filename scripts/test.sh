#!/usr/bin/env bash
# The project's test command: set up this machine, then run every test (unit, integration with
# real QEMU guests, and the engine-protocol tests).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# One formatter for the tree (prettier, .prettierrc.json): an unformatted file fails the run here, before the long tests.
npx prettier --check . >/dev/null || { npx prettier --list-different .; echo "test: files above are not formatted; run: npx prettier --write ." >&2; exit 1; }

report=$(mktemp)
trap 'rm -f "$report"' EXIT
set +e
npx jest --runInBand --json --outputFile="$report" "$@"
rc=$?
set -e
# One closing line any CI can read, whatever jest's reporter printed above.
node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`);' "$report" || true
exit "$rc"
