#!/usr/bin/env bash
# Checks gradwatch's Prometheus and Alertmanager configuration:
#   promtool check config   dashboards/prometheus/prometheus.yml (and the rule files it names)
#   promtool check rules    dashboards/prometheus/rules/*.rules.yml
#   promtool test rules     dashboards/prometheus/rules/*.rules.test.yml
#   amtool check-config     dashboards/alertmanager/alertmanager.yml and the receiver examples
#   amtool config routes test: the examples route critical, warning and Watchdog as documented
#
#   tests/alerting_check.sh [REPO_ROOT]      (default: the repository this script is in)
#
# promtool and amtool come from Debian's prometheus and prometheus-alertmanager packages
# (scripts/install-deps); PROMTOOL and AMTOOL override where they are looked for.
# Runs every check, then exits 1 if any failed.
set -uo pipefail

ROOT="$(cd "${1:-$(dirname "$0")/..}" && pwd)"
cd "$ROOT" || exit 2

find_tool() {  # name, override
  local t="${2:-}"
  if [ -n "$t" ]; then
    [ -x "$t" ] && { echo "$t"; return 0; }
    return 1
  fi
  command -v "$1" 2>/dev/null && return 0
  [ -x "/usr/bin/$1" ] && { echo "/usr/bin/$1"; return 0; }
  return 1
}

PROMTOOL="$(find_tool promtool "${PROMTOOL:-}")" || {
  echo "alerting_check: promtool not found (apt-get install prometheus, or set PROMTOOL)" >&2; exit 2; }
AMTOOL="$(find_tool amtool "${AMTOOL:-}")" || {
  echo "alerting_check: amtool not found (apt-get install prometheus-alertmanager, or set AMTOOL)" >&2; exit 2; }

failed=0
passed=0
check() {  # description, command...
  local what="$1"; shift
  echo "--- $what"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "alerting_check: FAILED: $what" >&2
    failed=$((failed + 1))
  fi
}

shopt -s nullglob
rules=(dashboards/prometheus/rules/*.rules.yml)
tests=(dashboards/prometheus/rules/*.rules.test.yml)
if [ ${#rules[@]} -eq 0 ] || [ ${#tests[@]} -eq 0 ]; then
  echo "alerting_check: no rule files or no rule tests under dashboards/prometheus/rules" >&2
  exit 1
fi

# check config resolves rule_files relative to prometheus.yml, and checks them too.
check "promtool check config" "$PROMTOOL" check config dashboards/prometheus/prometheus.yml
check "promtool check rules" "$PROMTOOL" check rules "${rules[@]}"
check "promtool test rules" "$PROMTOOL" test rules "${tests[@]}"
check "amtool check-config" "$AMTOOL" check-config dashboards/alertmanager/alertmanager.yml
# The receiver examples (Slack, e-mail, a generic webhook): valid, and routed as their
# comments say (every alert to gradwatchd too; Watchdog only to the heartbeat).
EXAMPLES=dashboards/alertmanager/examples/alertmanager-receivers.yml
check "amtool check-config (receiver examples)" "$AMTOOL" check-config "$EXAMPLES"
routes() {  # expected receivers, labels...
  local want="$1"; shift
  "$AMTOOL" config routes test --config.file="$EXAMPLES" --verify.receivers="$want" "$@" 2>/dev/null
}
check "example routes: critical" routes gradwatchd,critical severity=critical alertname=GradwatchNonFinite run_id=r
check "example routes: warning" routes gradwatchd,warning severity=warning alertname=GradwatchLossDiverging run_id=r
check "example routes: Watchdog" routes heartbeat alertname=Watchdog severity=none

echo "alerting_check: $passed passed, $failed failed ($("$PROMTOOL" --version 2>&1 | head -1); $("$AMTOOL" --version 2>&1 | head -1))"
[ "$failed" -eq 0 ]
