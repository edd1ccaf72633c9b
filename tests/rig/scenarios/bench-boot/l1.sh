# L1 side of the boot benchmark (tests/rig/README.md, "Benchmarks"). For each set
# of BENCH_SETS, BENCH_N rounds of: QEMU boots L2, then Conduit boots the same L2
# (same kernel, initramfs and command line). Each boot is timed in L1 from the
# VMM's exec (stamp-exec) to the first line of L2's init, and the VMM's memory is
# sampled while L2 idles at init. One BENCH-RESULT line per boot; benches/boot.sh
# turns them into medians and ratios. No timed assertions: every boot must reach
# init, L2 must see what it was given, the VMM must exit 0, and each boot must
# yield its numbers.
. "$RIG_DIR/bench-boot.conf" || rig_fail "no $RIG_DIR/bench-boot.conf (written by meta)"
echo "BENCH-CONF n=$BENCH_N sets='$BENCH_SETS' idle=$BENCH_IDLE vmms='$BENCH_VMMS'"

# bench_mib SIZE: 512M / 2G in MiB.
bench_mib() {
    case $1 in
        *G) echo $((${1%G} * 1024)) ;;
        *M) echo "${1%M}" ;;
    esac
}

# bench_sample PID GUEST_KB: the VMM's memory from /proc/PID/smaps. Guest RAM = the
# anonymous (or memfd) mappings of at least 128 MiB (the VMM's own heap arenas are
# 64 MiB at most), resident at most GUEST_KB (a small VMM mapping the kernel merged
# into the guest's is counted as overhead then); overhead = all resident memory (sum
# of smaps Rss: VmRSS lags by up to MiBs behind faulting threads) minus that.
bench_sample() {
    [ -r "/proc/$1/smaps" ] || { echo "sample=none"; return; }
    awk -v min_kb=131072 -v mem_kb="$2" '
        FILENAME ~ /status$/ { if ($1 == "VmRSS:") vmrss = $2; next }
        /^[0-9a-f]+-[0-9a-f]+ / {
            name = ""
            for (i = 6; i <= NF; i++) name = name (i > 6 ? " " : "") $i
            next
        }
        $1 == "Size:" { size = $2; next }
        $1 == "Rss:" {
            rss += $2
            is_guest = size >= min_kb && (name == "" || name ~ /^\[anon/ || name ~ /^\/memfd:/ ||
                                          name ~ /^\/anon_hugepage/ || name ~ /^\/dev\/zero/)
            if (is_guest) { guest += $2; maps_kb += size; maps++ }
            next
        }
        # Transparent hugepages backing guest RAM (L1 runs THP "always"): they make
        # L2 faster under the emulated nested paging.
        $1 == "AnonHugePages:" && is_guest { thp += $2 }
        END {
            if (guest > mem_kb) guest = mem_kb
            printf "rss_kb=%d vmrss_kb=%d guest_res_kb=%d guest_thp_kb=%d guest_maps=%d guest_maps_kb=%d overhead_kb=%d\n",
                rss, vmrss, guest, thp, maps, maps_kb, rss - guest
        }' "/proc/$1/status" "/proc/$1/smaps" 2>/dev/null || echo "sample=none"
}

# bench_reader DIR (with $mib set): pass the VMM's output on to the console, noting into DIR the
# VMM's PID and exec time (BENCH-EXEC), L1's uptime when L2's init printed its
# first line (and L2's own uptime then), and a memory sample once L2 idles.
bench_reader() {
    while IFS= read -r _line || [ -n "$_line" ]; do
        case $_line in
            *RIG-STAGE\ l2-init*)
                read -r _up _ < /proc/uptime
                echo "$_up" > "$1/t_init"
                _v=${_line#*uptime=}
                echo "${_v%%[!0-9.]*}" > "$1/guest_uptime" ;;
            *BENCH-EXEC\ pid=*)
                _v=${_line#*pid=}
                echo "${_v%% *}" > "$1/pid"
                _v=${_line#*l1_uptime=}
                echo "${_v%%[!0-9.]*}" > "$1/t_exec" ;;
        esac
        printf '%s\n' "$_line"
        case $_line in
            *BENCH-IDLE*)
                # L2 idles BENCH_IDLE s from here; sample one second in.
                sleep 1
                [ -s "$1/pid" ] && bench_sample "$(cat "$1/pid")" $((mib * 1024)) > "$1/mem" ;;
        esac
    done
}

# bench_boot SEQ VMM DEV MEM ROUND: one boot, timed and sampled; one BENCH-RESULT line.
bench_boot() {
    seq=$1 vmm=$2 dev=$3 mem=$4 round=$5
    dir=$TMPDIR/bench-$seq
    mib=$(bench_mib "$mem")
    cmdline="$L2_CMDLINE rig.bench_dev=$dev rig.bench_mem_mib=$mib rig.bench_idle=$BENCH_IDLE"
    case $vmm in
        qemu)
            set -- qemu-system-x86_64 -machine pc,accel=kvm -cpu host -m "$mem" -smp 1 \
                -nodefaults -display none -serial stdio -monitor none -no-reboot \
                -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$cmdline"
            [ "$dev" = nvme ] && set -- "$@" -device vfio-pci,host="$NVME_BDF" ;;
        conduit | conduit-pvh)
            kernel=$L2_KERNEL
            [ "$vmm" = conduit-pvh ] && kernel=$RIG_DIR/kernel/vmlinux
            set -- "$CONDUIT" run --kernel "$kernel" --initramfs "$L2_INITRD" \
                --cmdline "$cmdline" --cpus 1 --memory "$mem" --serial stdio
            [ "$dev" = nvme ] && set -- "$@" --device "$NVME_BDF" ;;
    esac
    mkdir -p "$dir" && mkfifo "$dir/out" || rig_fail "cannot make $dir/out"
    echo "BENCH-START seq=$seq set=$dev-$mem vmm=$vmm round=$round"
    bench_reader "$dir" < "$dir/out" &
    reader=$!
    rig_run_l2 "$SCENARIO_DIR/stamp-exec" "$@" > "$dir/out" 2>&1
    wait "$reader"

    times=$(awk -v e="$(cat "$dir/t_exec" 2>/dev/null)" -v i="$(cat "$dir/t_init" 2>/dev/null)" \
        -v g="$(cat "$dir/guest_uptime" 2>/dev/null)" 'BEGIN {
            if (e == "" || i == "") print "init_s=none"; else printf "init_s=%.2f", i - e
            printf " guest_uptime_s=%s\n", (g == "" ? "none" : g) }')
    sample=$(cat "$dir/mem" 2>/dev/null)
    result="BENCH-RESULT seq=$seq set=$dev-$mem vmm=$vmm round=$round rc=$RIG_L2_RC $times ${sample:-sample=none}"
    echo "$result"
    echo "$result" >> "$TMPDIR/bench-results"

    name=$vmm-$dev-$mem-$round
    rig_expect "$name-exit" 0 "$RIG_L2_RC"
    rig_check "$name-timed" "$times" bench_known "$times"
    # The sample found guest RAM as big as the guest (so the overhead excludes all of it).
    maps_kb=$(echo "$sample" | sed -n 's/.*guest_maps_kb=\([0-9]*\).*/\1/p')
    rig_check "$name-sampled" "guest RAM mappings ${maps_kb:-none} kB for $mib MiB" \
        bench_between "${maps_kb:-0}" $((mib * 1024)) $((mib * 1024 + 16384))
}

# bench_known TEXT: no "none" in TEXT. bench_between N LOW HIGH: LOW <= N <= HIGH.
bench_known() { case $1 in *none*) return 1 ;; esac; }
bench_between() { [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

# Warm L1's 9p page cache, so the first boot of each VMM does not pay for reading
# its binary, libraries, firmware, kernel and initramfs over 9p.
cat "$CONDUIT" "$L2_KERNEL" "$RIG_DIR/kernel/vmlinux" "$L2_INITRD" /usr/share/seabios/bios-256k.bin \
    /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/kvmvapic.bin > /dev/null 2>&1
qemu-system-x86_64 -version > /dev/null
"$CONDUIT" --version > /dev/null 2>&1

: > "$TMPDIR/bench-results"
seq=0
for set in $BENCH_SETS; do
    round=1
    while [ "$round" -le "$BENCH_N" ]; do
        for vmm in $BENCH_VMMS; do
            seq=$((seq + 1))
            bench_boot "$seq" "$vmm" "${set%%:*}" "${set#*:}" "$round"
        done
        round=$((round + 1))
    done
done
# All results again in one block (a console line split by a kernel message above
# can be found here).
sed 's/^BENCH-RESULT/BENCH-RESULT-AGAIN/' "$TMPDIR/bench-results"
