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
. "$REPO/benches/lib.sh"

# table LOG: medians per set and VMM, and Conduit/QEMU ratios, from the log's
# BENCH-START / BENCH-EXEC / l2-init / BENCH-RESULT lines.
table() {
    awk "$BENCH_AWK"'
    function add(key, name, value) { if (value != "" && value != "none") vals[key, name] = vals[key, name] " " value }
    function fmt(x, digits) { return x == "" ? "-" : sprintf("%." digits "f", x) }
    function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2f", a / b) }
    # L0 time stamps (first field) of the exec and of L2 init: a cross-check of L1 clock.
    /BENCH-START seq=/ { s = $0; sub(/.*BENCH-START seq=/, "", s); cur = s + 0 }
    /BENCH-EXEC pid=/ { exec_at[cur] = $1 }
    /RIG-STAGE l2-init/ { if ((cur in exec_at) && !(cur in l0)) l0[cur] = $1 - exec_at[cur] }
    /BENCH-RESULT(-AGAIN)? seq=/ {
        if (!bench_result(r)) next
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

# heading N LOG: what the table shows.
heading() {
    echo "boot benchmark, $(date -u +%Y-%m-%d), N=$1, sets: ${BENCH_SETS:-nodev:512M nvme:512M}; log: $2"
    echo "start->init: L1 clock from the VMM's exec to L2 init's first line; (L0 wall): the same"
    echo "from the rig log's L0 stamps; L2 uptime: the guest's own clock at init; VMM overhead:"
    echo "resident memory minus resident guest RAM while L2 idles (medians)"
}

bench_main bench-boot 3 "$@"
