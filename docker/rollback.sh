#!/usr/bin/env bash
# rollback.sh: the inverse of switch.sh: every instance back to its previous colour, all or
# none (turnout fleet rollback), wait until the colour rolled away from has nothing in flight,
# then stop its app. Same environment and exit codes as switch.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=docker/fleet.sh
. "$here/fleet.sh"

from=$("$turnout" status --json --admin "${instances[0]}" | jq -r .active)
"$turnout" fleet rollback "${fleet_args[@]}"
to=$("$turnout" status --json --admin "${instances[0]}" | jq -r .active)
drain_and_stop "$to" "$from"
