# shellcheck shell=bash
# What switch.sh and rollback.sh share: the instance list, and the drain-then-stop step.
turnout=${TURNOUT:-turnout}
instances=()
if [ -n "${INSTANCES_FILE:-}" ]; then
    while read -r line; do
        case $line in '' | '#'*) ;; *) instances+=("$line") ;; esac
    done <"$INSTANCES_FILE"
else
    read -r -a instances <<<"${INSTANCES:-${TURNOUT_ADMIN:-http://127.0.0.1:9901}}"
fi
if [ "${#instances[@]}" -eq 0 ]; then
    echo "$(basename "$0"): no instances (set INSTANCES or INSTANCES_FILE)" >&2
    exit 2
fi
fleet_args=()
for url in "${instances[@]}"; do
    fleet_args+=(--instance "$url")
done

# drain_and_stop LIVE OLD: on every instance, wait until OLD has nothing in flight (a repeated
# switch to LIVE with --wait-drained changes nothing and waits), then stop OLD's app there.
drain_and_stop() {
    local live=$1 old=$2 url
    for url in "${instances[@]}"; do
        close=()
        [ -z "${CLOSE_TUNNELS_AFTER:-}" ] || close=(--close-tunnels-after "$CLOSE_TUNNELS_AFTER")
        if ! "$turnout" switch "$live" --admin "$url" --wait-drained "${DRAIN_TIMEOUT:-60s}" "${close[@]}"; then
            echo "$(basename "$0"): $url: $old did not drain; nothing was stopped" >&2
            exit 3
        fi
    done
    for url in "${instances[@]}"; do
        COLOUR=$old INSTANCE=$url bash -c "${STOP_CMD:-docker rm -f \"app-\$COLOUR\"}"
    done
    echo "$(basename "$0"): $live is live everywhere; $old stopped"
}
