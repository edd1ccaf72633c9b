# Shared by the benchmark scripts (sourced by bash; REPO set by the caller).

# bench_usage: the calling script's header comment (after the #! line, up to `set`), as usage.
bench_usage() { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# BENCH_AWK: awk functions to put before a table's awk program: median(LIST) of a
# space-separated list of numbers ("" for an empty list); bench_result(R) parses the
# BENCH-RESULT line in $0 into R (field -> value) and returns 0 for a seq seen before (the
# BENCH-RESULT-AGAIN copy of a line), else 1.
BENCH_AWK='
function bench_result(r,    s, n, f, i, k, v) {
    s = substr($0, match($0, /BENCH-RESULT(-AGAIN)? seq=/))
    n = split(s, f, " ")
    delete r
    for (i = 2; i <= n; i++) { k = f[i]; sub(/=.*/, "", k); v = f[i]; sub(/^[^=]*=/, "", v); r[k] = v }
    if (r["seq"] in bench_seen) return 0
    bench_seen[r["seq"]] = 1
    return 1
}
function median(list,    v, n, i, j, t) {
    n = split(list, v, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}'

# bench_conduit: the conduit binary to benchmark, in BENCH_CONDUIT: CONDUIT_BIN, or what a
# fresh `cargo build --release` built.
bench_conduit() {
    if [ -n "${CONDUIT_BIN:-}" ]; then
        BENCH_CONDUIT=$CONDUIT_BIN
        return
    fi
    echo "bench: cargo build --release" >&2
    # cargo names the executable it built (the target directory depends on
    # .cargo/config.toml and CARGO_TARGET_DIR).
    BENCH_CONDUIT=$(cd "$REPO" && cargo build --release --bin conduit \
        --message-format=json-render-diagnostics | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
    [ -n "$BENCH_CONDUIT" ] || { echo "bench: cargo build --release failed" >&2; exit 1; }
}

# bench_rig SCENARIO [VAR=VALUE...]: runs the rig scenario with BENCH_CONDUIT and the
# variables, its output on stderr; sets BENCH_RC (the run's exit code) and BENCH_LOG (its
# log), or exits when the run named no log.
bench_rig() {
    local scenario=$1 out
    shift
    out=$(mktemp)
    (cd "$REPO" && env "$@" CONDUIT_BIN="$BENCH_CONDUIT" tests/rig/run "$scenario") 2>&1 |
        tee "$out" >&2
    BENCH_RC=${PIPESTATUS[0]}
    BENCH_LOG=$(sed -n 's/^rig: log: //p' "$out" | head -n1)
    rm -f "$out"
    [ -f "$BENCH_LOG" ] || { echo "bench: the rig run named no log" >&2; exit 1; }
}

# bench_main SCENARIO DEFAULT_N ARGS...: the command line of a benchmark script, whose
# functions `table LOG` (the results of a run's log) and `heading N LOG` (what the table
# shows) it calls. `--table LOG` prints the table of an earlier run; otherwise [N] rounds
# (default DEFAULT_N) of SCENARIO are run with BENCH_N=N, then the heading and the table are
# printed. Exits with the run's status.
bench_main() {
    local scenario=$1 n=$2 rc
    shift 2
    case ${1:-} in
        --table) [ -n "${2:-}" ] || bench_usage; table "$2"; exit ;;
        -*) bench_usage ;;
    esac
    n=${1:-$n}
    [[ $n =~ ^[1-9][0-9]*$ ]] || bench_usage
    bench_conduit
    bench_rig "$scenario" BENCH_N="$n"
    rc=$BENCH_RC
    echo
    heading "$n" "$BENCH_LOG"
    table "$BENCH_LOG" || rc=1
    [ "$rc" = 0 ] || echo "bench: the rig run did not pass (exit $rc): see the log" >&2
    exit "$rc"
}
