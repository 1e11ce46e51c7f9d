#!/bin/sh
# A shell worker that reports readiness the way shell-wrapped services do: systemd's own
# systemd-notify, a child process of the worker (tests/e2e/test_notify_access.py).
sleep 0.1
systemd-notify --ready --status="shell worker $$ ready as $(id -un)"
trap 'exit 0' TERM
while :; do sleep 0.2; done
