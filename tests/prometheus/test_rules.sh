#!/bin/bash
# Check the alert rules (promtool check rules) and run their unit tests (promtool test
# rules), printing promtool's full output.
# Usage: test_rules.sh RULES_FILE TEST_FILE. Exit 77 (skipped) without promtool, unless
# CI=true.
set -euo pipefail

rules=${1:?usage: test_rules.sh RULES_FILE TEST_FILE}
tests=${2:?usage: test_rules.sh RULES_FILE TEST_FILE}

if ! command -v promtool >/dev/null; then
    if [ "${CI:-}" = true ]; then
        echo "FAIL: promtool is not installed (CI=true: missing tools fail the test)"
        exit 1
    fi
    echo "SKIP: promtool is not installed (apt-get install prometheus)"
    exit 77
fi

failed=0
echo "promtool check rules $rules"
promtool check rules "$rules" || failed=1
echo "promtool test rules $tests"
promtool test rules "$tests" || failed=1
[ $failed -eq 0 ] && echo "PASS: alert rules checked and tested"
exit $failed
