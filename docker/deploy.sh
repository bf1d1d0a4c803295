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
#   DEPLOY_STOP_CMD       how to stop it again (default: docker rm -f app-$COLOUR)
#   DEPLOY_HEALTH_TIMEOUT seconds to wait for it to become healthy (default 60)
set -euo pipefail
version=${1:?usage: deploy.sh VERSION}
admin=${TURNOUT_ADMIN:-http://127.0.0.1:9901}
turnout=${TURNOUT:-turnout}
timeout=${DEPLOY_HEALTH_TIMEOUT:-60}
auth=()
if [ -n "${TURNOUT_ADMIN_TOKEN:-}" ]; then
    auth=(-H "Authorization: Bearer $TURNOUT_ADMIN_TOKEN")
fi

active=$("$turnout" status --json --admin "$admin" | jq -r .active)
case $active in
    blue) colour=green port=${GREEN_PORT:-4000} ;;
    green) colour=blue port=${BLUE_PORT:-3000} ;;
    *)
        echo "deploy.sh: the active pool is '$active'; this script knows blue and green" >&2
        exit 1
        ;;
esac
export COLOUR=$colour PORT=$port VERSION=$version IMAGE=${IMAGE:-myapp}
# Single quotes on purpose: the commands expand COLOUR, PORT, ... when bash -c runs them.
# shellcheck disable=SC2016
start=${DEPLOY_START_CMD:-'docker run -d --name "app-$COLOUR" -p "127.0.0.1:$PORT:8080" "$IMAGE:$VERSION"'}
# shellcheck disable=SC2016
stop=${DEPLOY_STOP_CMD:-'docker rm -f "app-$COLOUR"'}

echo "deploy.sh: $active is live; starting $VERSION as $colour on 127.0.0.1:$port"
bash -c "$start"
curl -fsS --max-time 10 "${auth[@]}" -H 'Content-Type: application/json' -X PUT "$admin/v1/pools/$colour" \
    -d "{\"servers\":[\"127.0.0.1:$port\"]}" >/dev/null

# turnout's prepare probes every server of the pool now, as the switch will: 200 means healthy.
# The prepared switch is dropped at once; nothing changes.
deadline=$((SECONDS + timeout))
while :; do
    answer=$(curl -sS --max-time 10 "${auth[@]}" -H 'Content-Type: application/json' -X POST "$admin/v1/prepare" \
        -d "{\"to\":\"$colour\",\"ttl\":\"5s\"}" -w '\n%{http_code}' || true)
    code=${answer##*$'\n'}
    body=${answer%$'\n'*}
    if [ "$code" = 200 ]; then
        token=$(jq -r .token <<<"$body")
        curl -fsS --max-time 10 "${auth[@]}" -H 'Content-Type: application/json' -X POST "$admin/v1/abort" \
            -d "{\"token\":\"$token\"}" >/dev/null
        echo "deploy.sh: $colour ($VERSION) is healthy; switch with switch.sh"
        exit 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "deploy.sh: $colour did not become healthy within ${timeout}s: $body" >&2
        echo "deploy.sh: stopping what was started" >&2
        bash -c "$stop" || true
        exit 1
    fi
    sleep 1
done
