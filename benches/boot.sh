#!/bin/bash
# Boot benchmark: QEMU vs Conduit booting the same stock L2 (kernel, initramfs,
# command line) inside one run of the nested rig (tests/rig/README.md, "Benchmarks"):
# time from the VMM's exec to L2's init (L1's clock), L2's own uptime then, and the
# VMM's memory overhead (resident memory minus resident guest RAM) while L2 idles.
# Prints medians per VMM and the ratios to QEMU; the raw numbers stay in the rig's
# log (BENCH-RESULT lines). VMMs: qemu and conduit boot the bzImage, conduit-pvh the
# same kernel's ELF vmlinux through its PVH entry (BENCH_VMMS picks; default all three).
#
#   benches/boot.sh [N]    N rounds per set (one boot per VMM), default 3
#   benches/boot.sh --table LOG    only print the table of an earlier run's log
#
# Environment: BENCH_SETS (default "nodev:512M nvme:512M"; "nvme:1G nvme:2G nvme:3G"
# shows the DMA-map cost growing with guest RAM), BENCH_IDLE (s, default 3),
# CARGO_TARGET_DIR (where the release build goes), CONDUIT_BIN (benchmark this binary
# instead of building one).
set -uo pipefail

REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)

usage() { sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# table LOG: medians per set and VMM, and Conduit/QEMU ratios, from the log's
# BENCH-START / BENCH-EXEC / l2-init / BENCH-RESULT lines.
table() {
    awk '
    function median(list,    v, n, i, j, t) {
        n = split(list, v, " ")
        if (n == 0) return ""
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function add(key, name, value) { if (value != "" && value != "none") vals[key, name] = vals[key, name] " " value }
    function fmt(x, digits) { return x == "" ? "-" : sprintf("%." digits "f", x) }
    function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2f", a / b) }
    # L0 time stamps (first field) of the exec and of L2 init: a cross-check of L1 clock.
    /BENCH-START seq=/ { s = $0; sub(/.*BENCH-START seq=/, "", s); cur = s + 0 }
    /BENCH-EXEC pid=/ { exec_at[cur] = $1 }
    /RIG-STAGE l2-init/ { if ((cur in exec_at) && !(cur in l0)) l0[cur] = $1 - exec_at[cur] }
    /BENCH-RESULT(-AGAIN)? seq=/ {
        s = substr($0, match($0, /BENCH-RESULT(-AGAIN)? seq=/))
        n = split(s, f, " ")
        delete r
        for (i = 2; i <= n; i++) { k = f[i]; sub(/=.*/, "", k); v = f[i]; sub(/^[^=]*=/, "", v); r[k] = v }
        if (r["seq"] in seen) next
        seen[r["seq"]] = 1
        key = r["set"] SUBSEP r["vmm"]
        if (!(r["set"] in set_seen)) { set_seen[r["set"]] = 1; sets[++nsets] = r["set"] }
        if (!(r["vmm"] in vmm_seen)) { vmm_seen[r["vmm"]] = 1; vmms[++nvmms] = r["vmm"] }
        total[key]++
        if (r["rc"] == 0 && r["init_s"] != "none") good[key]++
        add(key, "init", r["init_s"])
        add(key, "guest", r["guest_uptime_s"])
        if (r["seq"] in l0) add(key, "l0", sprintf("%.2f", l0[r["seq"]]))
        if (r["rss_kb"] != "") {
            # Resident guest RAM is at most the guest size (older logs did not cap it).
            mem_kb = r["set"]; sub(/.*-/, "", mem_kb)
            mem_kb = (mem_kb ~ /G$/ ? 1048576 : 1024) * (mem_kb + 0)
            guest_kb = r["guest_res_kb"] + 0 > mem_kb ? mem_kb : r["guest_res_kb"]
            add(key, "ovh", sprintf("%.1f", (r["rss_kb"] - guest_kb) / 1024))
            add(key, "rss", sprintf("%.1f", r["rss_kb"] / 1024))
        }
    }
    END {
        if (nsets == 0) { print "no BENCH-RESULT lines in the log"; exit 1 }
        printf "%-11s %-11s %5s %11s %9s %10s %8s %13s\n", "set", "vmm", "boots", "start->init", "(L0 wall)",
            "L2 uptime", "RSS", "VMM overhead"
        for (i = 1; i <= nsets; i++) {
            st = sets[i]
            for (m = 1; m <= nvmms; m++) {
                vmm = vmms[m]
                key = st SUBSEP vmm
                if (!(key in total)) continue
                med[vmm, "init"] = median(vals[key, "init"])
                med[vmm, "ovh"] = median(vals[key, "ovh"])
                printf "%-11s %-11s %2d/%-2d %9s s %7s s %8s s %4s MiB %8s MiB\n", st, vmm, good[key], total[key],
                    fmt(med[vmm, "init"], 2), fmt(median(vals[key, "l0"]), 2), fmt(median(vals[key, "guest"]), 2),
                    fmt(median(vals[key, "rss"]), 0), fmt(med[vmm, "ovh"], 1)
            }
            for (m = 1; m <= nvmms; m++) {
                vmm = vmms[m]
                if (vmm == "qemu" || !((st SUBSEP vmm) in total)) continue
                printf "%-11s %-11s %5s %9s x %29s %8s x\n", "", vmm "/qemu", "",
                    ratio(med[vmm, "init"], med["qemu", "init"]), "",
                    ratio(med[vmm, "ovh"], med["qemu", "ovh"])
            }
        }
        print ""
        print "raw start->init (s) and VMM overhead (MiB), in boot order:"
        for (i = 1; i <= nsets; i++)
            for (m = 1; m <= nvmms; m++) {
                vmm = vmms[m]
                key = sets[i] SUBSEP vmm
                if (!(key in total)) continue
                printf "  %-11s %-11s init:%s  overhead:%s\n", sets[i], vmm, vals[key, "init"], vals[key, "ovh"]
            }
    }' "$1"
}

case ${1:-} in
    --table) [ -n "${2:-}" ] || usage; table "$2"; exit ;;
    -*) usage ;;
esac
N=${1:-3}
[[ $N =~ ^[1-9][0-9]*$ ]] || usage

cd "$REPO" || exit 1
if [ -n "${CONDUIT_BIN:-}" ]; then
    conduit=$CONDUIT_BIN
else
    echo "bench: cargo build --release" >&2
    # cargo names the executable it built (the target directory depends on
    # .cargo/config.toml and CARGO_TARGET_DIR).
    conduit=$(cargo build --release --bin conduit --message-format=json-render-diagnostics |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
    [ -n "$conduit" ] || { echo "bench: cargo build --release failed" >&2; exit 1; }
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
BENCH_N=$N CONDUIT_BIN=$conduit tests/rig/run bench-boot 2>&1 | tee "$out" >&2
rc=${PIPESTATUS[0]}
log=$(sed -n 's/^rig: log: //p' "$out" | head -n1)
[ -f "$log" ] || { echo "bench: the rig run named no log" >&2; exit 1; }

echo
echo "boot benchmark, $(date -u +%Y-%m-%d), N=$N, sets: ${BENCH_SETS:-nodev:512M nvme:512M}; log: $log"
echo "start->init: L1 clock from the VMM's exec to L2 init's first line; (L0 wall): the same"
echo "from the rig log's L0 stamps; L2 uptime: the guest's own clock at init; VMM overhead:"
echo "resident memory minus resident guest RAM while L2 idles (medians)"
table "$log" || rc=1
[ "$rc" = 0 ] || echo "bench: the rig run did not pass (exit $rc): see the log" >&2
exit "$rc"
