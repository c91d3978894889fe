#!/bin/sh
# Run every atheris harness for a bounded time: `tests/fuzz/run.sh [SECONDS] [TARGET...]`.
# New coverage-increasing inputs go to a scratch corpus ($FUZZ_WORK, default a temp dir) so the
# committed seeds stay small; crashes land in tests/fuzz/crashes/<target>/ for a regression
# test (tests/unit/test_fuzz_regressions.py). Exit status is non-zero if any harness crashed.
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
SECONDS_EACH=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-pdu command header}
WORK=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/pacs-fuzz.XXXXXX")}
status=0
for target in $TARGETS; do
    mkdir -p "$WORK/$target" "tests/fuzz/crashes/$target"
    echo "== fuzz_$target: ${SECONDS_EACH}s, scratch corpus $WORK/$target"
    "$PY" -W ignore "tests/fuzz/fuzz_$target.py" -max_total_time="$SECONDS_EACH" \
        -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="tests/fuzz/crashes/$target/" \
        "$WORK/$target" "tests/fuzz/corpus/$target" || status=1
done
exit $status
