#!/usr/bin/env bash
# deploy.sh VERSION: start VERSION as the idle colour beside the live one, register it with
# turnout, and wait until turnout's own probe finds it healthy. Exit 0: ready for switch.sh.
# Exit 1: it never got healthy, and what this script started is stopped again. Nothing here
# changes which colour serves.
#
# Environment (all optional):
#   TURNOUT_ADMIN         this instance's admin API (default http://127.0.0.1:9901)
#   TURNOUT_ADMIN_TOKEN   its token, if it has one
#   TURNOUT               the turnout binary (default: turnout on PATH)
#   IMAGE                 the app image for the default start command (default myapp)
#   BLUE_PORT, GREEN_PORT where each colour's app listens on 127.0.0.1 (default 3000, 4000)
#   DEPLOY_START_CMD      how to start the app, run by bash with COLOUR, PORT, VERSION and IMAGE
#                         set (default: docker run -d --name app-$COLOUR -p 127.0.0.1:$PORT:8080
#                         $IMAGE:$VERSION); any command works, Docker is not required
#   DEPLOY_STOP_CMD       how to remove it (default: docker rm -f app-$COLOUR); also run first,
#                         to clear what an earlier deploy of the same colour left
#   DEPLOY_HEALTH_TIMEOUT seconds to wait for it to become healthy (default 60)
set -euo pipefail
version=${1:?usage: deploy.sh VERSION}
export TURNOUT_ADMIN=${TURNOUT_ADMIN:-http://127.0.0.1:9901}
turnout=${TURNOUT:-turnout}
timeout=${DEPLOY_HEALTH_TIMEOUT:-60}

status=$("$turnout" status --json)
active=$(jq -r .active <<<"$status")
case $active in
    blue) colour=green port=${GREEN_PORT:-4000} ;;
    green) colour=blue port=${BLUE_PORT:-3000} ;;
    *)
        echo "deploy.sh: the active pool is '$active'; this script knows blue and green" >&2
        exit 1
        ;;
esac
# The idle colour must be idle: no share of new clients (a split or rollout under way) and
# nothing in flight (the last switch still draining). Else replacing it would cut live users.
weight=$(jq -r --arg c "$colour" '.weights[$c] // 0' <<<"$status")
busy=$(jq -r --arg c "$colour" '(.pools[$c].in_flight // 0) + (.pools[$c].tunnels // 0)' <<<"$status")
if [ "$weight" != 0 ] || [ "$busy" != 0 ]; then
    echo "deploy.sh: $colour is not idle (weight $weight, $busy request(s) or WebSocket(s) in flight); finish or roll back the last deploy first" >&2
    exit 1
fi
export COLOUR=$colour PORT=$port VERSION=$version IMAGE=${IMAGE:-myapp}
# Single quotes on purpose: the commands expand COLOUR, PORT, ... when bash -c runs them.
# shellcheck disable=SC2016
start=${DEPLOY_START_CMD:-'docker run -d --name "app-$COLOUR" -p "127.0.0.1:$PORT:8080" "$IMAGE:$VERSION"'}
# shellcheck disable=SC2016
stop=${DEPLOY_STOP_CMD:-'docker rm -f "app-$COLOUR" >/dev/null 2>&1 || true'}

# What an earlier deploy of this colour left (a stopped container keeps its name, and the
# start below would fail on it): it is not live, so it goes.
bash -c "$stop"
echo "deploy.sh: $active is live; starting $VERSION as $colour on 127.0.0.1:$port"
if ! bash -c "$start"; then
    echo "deploy.sh: starting $VERSION failed; $active still serves" >&2
    bash -c "$stop" || true
    exit 1
fi
# turnout deploy --no-switch: register it (turnout starts checking it at once) and wait until
# turnout's own health checks pass, with progress; nothing changes which colour serves. Its
# exit codes (turnout help deploy): 4 not healthy in time, 1 refused, 2 unreachable.
set +e
"$turnout" deploy "$colour" --server "127.0.0.1:$port" --no-switch --wait-healthy "${timeout}s"
code=$?
set -e
if [ "$code" -ne 0 ]; then
    case $code in
        4) echo "deploy.sh: $colour did not become healthy within ${timeout}s" >&2 ;;
        *) echo "deploy.sh: registering $colour failed (turnout deploy exit $code)" >&2 ;;
    esac
    echo "deploy.sh: stopping what was started; $active still serves" >&2
    bash -c "$stop" || true
    exit 1
fi
echo "deploy.sh: $colour ($VERSION) is healthy; switch with switch.sh"
