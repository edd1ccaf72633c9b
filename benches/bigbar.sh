#!/bin/bash
# Big-BAR benchmark: time from the VMM's exec to L2's init with ivshmem's 64 GiB BAR
# passed through, for QEMU (which DMA-maps every BAR it maps into the guest), Conduit
# (maps no BAR in the IOMMU) and Conduit with p2p=on (maps the BAR once, for
# peer-to-peer DMA), in one run of the nested rig (tests/rig/README.md, "Benchmarks").
# Prints medians per VMM, the ratios to QEMU and the DMA-map time Conduit logged; the raw
# numbers stay in the rig's log (BENCH-RESULT lines).
#
#   benches/bigbar.sh [N]          N rounds (a QEMU, a Conduit and a Conduit p2p=on boot), default 1
#   benches/bigbar.sh --table LOG  only print the table of an earlier run's log
#
# Environment: CARGO_TARGET_DIR (where the release build goes), CONDUIT_BIN (benchmark
# this binary instead of building one), RIG_DIR (the rig's cache and logs).
set -uo pipefail

REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
. "$REPO/benches/lib.sh"

# table LOG: medians per VMM and ratios to QEMU, from the log's BENCH-RESULT lines.
table() {
    awk "$BENCH_AWK"'
    /BENCH-RESULT(-AGAIN)? seq=/ {
        if (!bench_result(r)) next
        vmm = r["vmm"]
        total[vmm]++
        if (r["rc"] == 0 && r["init_s"] != "none") { good[vmm]++; init[vmm] = init[vmm] " " r["init_s"] }
        if (r["map_s"] != "none" && r["map_s"] != "") map[vmm] = map[vmm] " " r["map_s"]
    }
    END {
        if (length(total) == 0) { print "no BENCH-RESULT lines in the log"; exit 1 }
        q = median(init["qemu"])
        printf "%-12s %5s %12s %9s %14s   %s\n", "vmm", "boots", "start->init", "vs QEMU", "p2p DMA map", "raw start->init (s)"
        split("qemu conduit conduit-p2p", order, " ")
        for (i = 1; i <= 3; i++) {
            vmm = order[i]
            if (!(vmm in total)) continue
            m = median(init[vmm])
            printf "%-12s %2d/%-2d %10s s %8s x %14s   %s\n", vmm, good[vmm], total[vmm],
                m == "" ? "-" : sprintf("%.2f", m),
                (m == "" || q == "" || q == 0) ? "-" : sprintf("%.3f", m / q),
                (vmm in map) ? sprintf("%.2f s", median(map[vmm])) : "-", init[vmm]
        }
    }' "$1"
}

# heading N LOG: what the table shows.
heading() {
    echo "big-BAR benchmark, $(date -u +%Y-%m-%d), N=$1, ivshmem with a 64 GiB BAR2, 512 MiB L2; log: $2"
    echo "start->init: L1 clock from the VMM's exec to L2 init's first line (medians); p2p DMA map:"
    echo "the time Conduit logged for DMA-mapping BAR2 (VFIO type1 in L1)"
}

bench_main bench-bigbar 1 "$@"
