#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run), in two passes:
#   1. every test not marked `solo`, on two pytest workers (pytest-xdist; work stealing
#      evens out the long end-to-end tests between them);
#   2. the `solo` tests, one at a time on an otherwise idle machine: figures counted
#      within a wall-clock window, or a race that a machine busy with other tests
#      loses (a second node's start-up against a search's trials).
# Extra arguments go to both passes (e.g. `-x`, or a test path).
set -uo pipefail
cd "$(dirname "$0")/.."
pytest=(.venv/bin/pytest -q -p no:cacheprovider)
"${pytest[@]}" -n 2 --dist worksteal -m "not solo" --durations=30 "$@"
shared=$?
# Pass 2 collects only the files that hold a solo test (all of them: 3 s more), unless
# the arguments choose what to run.
solo_files=()
[ $# -eq 0 ] && mapfile -t solo_files < <(grep -l "mark\.solo" tests/test_*.py)
"${pytest[@]}" -m solo --durations=5 "$@" "${solo_files[@]}"
solo=$?
[ "$solo" = 5 ] && solo=0  # the arguments selected no solo test
[ "$shared" = 5 ] && shared=0
[ "$shared" = 0 ] && [ "$solo" = 0 ]
