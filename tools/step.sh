#!/usr/bin/env bash
# Run one step of `make test` (or `make book`) between banners, print its wall time, and stop on failure.
#
#   tools/step.sh "TITLE" [--no-tests-ok] COMMAND [ARGS...]
#
# --no-tests-ok: pytest exits with code 5 when it collected no tests; with this flag that is reported loudly
# and counted as a pass (nbval over notebooks that have no code cells), otherwise it fails like any other code.
set -uo pipefail

title=$1
shift
no_tests_ok=0
if [ "${1:-}" = "--no-tests-ok" ]; then
    no_tests_ok=1
    shift
fi

rule='=================================================================================================='
printf '\n%s\n==> %s\n    $ %s\n%s\n' "$rule" "$title" "$*" "$rule"
start=$(date +%s)
"$@"
rc=$?
elapsed=$(( $(date +%s) - start ))

if [ "$rc" -eq 5 ]; then
    printf '\n!!!!!!!!!! %s: pytest collected NO tests (exit code 5) !!!!!!!!!!\n' "$title"
    if [ "$no_tests_ok" -eq 1 ]; then
        printf '!!!!!!!!!! nothing to check in this step; counted as passed !!!!!!!!!!\n'
        rc=0
    fi
fi
if [ "$rc" -ne 0 ]; then
    printf '\n%s\n==> FAILED: %s (exit code %d after %d s)\n%s\n' "$rule" "$title" "$rc" "$elapsed" "$rule"
    exit "$rc"
fi
printf '==> passed: %s (%d s)\n' "$title" "$elapsed"
