#!/usr/bin/env bash
# switch.sh: move every instance to the colour deploy.sh started through a guarded rollout
# (turnout fleet rollout: the new colour's share of new clients steps up on every instance
# together, each step judged on turnout's own counters, every instance back to the old colour
# on a failed check), wait on each until the old colour has nothing in flight, then stop the
# old colour's app on each. With SMOKE_CMD, that command runs right after the last step; if it
# fails, every instance is rolled back at once and nothing is stopped (exit 5). Exit 1 when the
# rollout was refused or rolled back (every instance is on the old colour, which still runs),
# 3 when an instance did not drain in time (nothing is stopped then), 4 when the fleet was left
# mixed.
#
# Environment (all optional):
#   INSTANCES             admin URLs, space-separated (default: $TURNOUT_ADMIN or
#                         http://127.0.0.1:9901); or INSTANCES_FILE, one per line
#   TURNOUT_ADMIN_TOKEN   the admin token, the same on every instance
#   TURNOUT               the turnout binary (default: turnout on PATH)
#   ROLLOUT_STEPS         the new colour's share at each step, percent (default 5,25,50,100;
#                         "100" is a plain fleet switch)
#   ROLLOUT_BAKE          how long each step runs before its verdict (default 60s)
#   ROLLOUT_ARGS          more flags for turnout fleet rollout, e.g. "--min-requests 50
#                         --max-error-rate 0.01" (see turnout fleet rollout --help)
#   SMOKE_CMD             a check of the new version through the load balancer, run by bash
#                         after the switch (e.g. curl -fsS https://app.example.com/health)
#   DRAIN_TIMEOUT         how long to wait for the old colour to drain (default 60s)
#   CLOSE_TUNNELS_AFTER   close the old colour's WebSockets (1001 Going Away) this long after
#                         the switch, so the drain ends (e.g. 30s, below DRAIN_TIMEOUT); unset:
#                         WebSockets stay open until they end or DRAIN_TIMEOUT runs out
#   STOP_CMD              how to stop the old colour's app on one instance, run by bash with
#                         COLOUR and INSTANCE (its admin URL) set (default: docker rm -f
#                         app-$COLOUR, which only reaches the local Docker; use ssh for others)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=docker/fleet.sh
. "$here/fleet.sh"

old=$("$turnout" status --json --admin "${instances[0]}" | jq -r .active)
case $old in
    blue) new=green ;;
    green) new=blue ;;
    *)
        echo "switch.sh: the active pool is '$old'; this script knows blue and green" >&2
        exit 1
        ;;
esac
read -r -a rollout_args <<<"${ROLLOUT_ARGS:-}"
if ! "$turnout" fleet rollout --to "$new" --steps "${ROLLOUT_STEPS:-5,25,50,100}" \
    --bake "${ROLLOUT_BAKE:-60s}" "${rollout_args[@]}" "${fleet_args[@]}"; then
    echo "switch.sh: the rollout of $new did not pass; every instance is on $old, and $new still runs, for a look" >&2
    exit 1
fi
if [ -n "${SMOKE_CMD:-}" ] && ! bash -c "$SMOKE_CMD"; then
    echo "switch.sh: the smoke test failed on $new; rolling every instance back to $old" >&2
    "$turnout" fleet rollback "${fleet_args[@]}"
    echo "switch.sh: $old is live again everywhere; $new still runs, for a look" >&2
    exit 5
fi
drain_and_stop "$new" "$old"
