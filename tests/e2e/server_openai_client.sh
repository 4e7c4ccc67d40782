#!/usr/bin/env bash
# End-to-end: `celine serve` over loopback sockets, suite "openai_client" (see tests/e2e/server/e2e.py).
set -euo pipefail
: "${CELINE:?path of the celine binary}"
CELINE_SRC="${CELINE_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}"
exec timeout 600 python3 "$CELINE_SRC/tests/e2e/server/e2e.py" openai_client
