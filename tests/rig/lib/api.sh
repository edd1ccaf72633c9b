# The REST API client of the L1 scripts that drive `conduit serve` with curl (`conduit ctl`
# sends the same requests). Source it after setting S (the API socket), BODY (where the
# last answer goes) and LOG (serve's output).

# api METHOD ROUTE [JSON_FILE]: prints the HTTP status; the answer is in $BODY.
api() {
    rm -f "$BODY"
    if [ -n "${3:-}" ]; then
        curl -sS --max-time 150 --unix-socket "$S" -o "$BODY" -w '%{http_code}' -X "$1" \
            -H 'Content-Type: application/json' --data-binary "@$3" "http://localhost/api/v1/$2"
    else
        curl -sS --max-time 150 --unix-socket "$S" -o "$BODY" -w '%{http_code}' -X "$1" \
            "http://localhost/api/v1/$2"
    fi
}
# expect_api NAME STATUS METHOD ROUTE [JSON_FILE]
expect_api() {
    _name=$1 _want=$2
    shift 2
    _got=$(api "$@")
    rig_check "$_name" "$* -> want $_want got $_got: $(head -c 300 "$BODY" 2>/dev/null)" [ "$_got" = "$_want" ]
}
# jq_true [JQ ARGS...] FILTER: the last answer satisfies the filter (jq's output dropped).
jq_true() { jq -e "$@" "$BODY" > /dev/null; }
# body_is NAME JQ_FILTER: check that the last answer satisfies the filter.
body_is() {
    rig_check "$1" "$2 on $(head -c 600 "$BODY")" jq_true "$2"
}
# wait_log PATTERN COUNT SECONDS: until serve's output has PATTERN COUNT times. Matches, not
# lines: a guest stopped mid-line leaves no newline, so the next guest's first line joins it.
log_has() { [ "$(grep -o -- "$1" "$LOG" 2> /dev/null | wc -l)" -ge "$2" ]; }
wait_log() { rig_until "$3" log_has "$1" "$2"; }
# wait_api: until the server answers vmm.ping (10 s at most), else give up.
pings() { [ "$(api GET vmm.ping 2> /dev/null)" = 200 ]; }
wait_api() { rig_until 10 pings || rig_fail "conduit serve did not answer on $S"; }
