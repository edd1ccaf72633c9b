# L1 side of the big-BAR benchmark (tests/rig/README.md, "Benchmarks"): BENCH_N rounds of
# QEMU, Conduit and Conduit with p2p=on booting the same L2 with ivshmem (64 GiB BAR2)
# passed through; each timed from the VMM's exec (bench-boot's stamp-exec) to the first
# line of L2's init, on L1's clock. One BENCH-RESULT line per boot; benches/bigbar.sh makes
# the table. No timed assertions: every boot must reach init, see the 64 GiB BAR and exit 0.
. "$RIG_DIR/bench-bigbar.conf" || rig_fail "no $RIG_DIR/bench-bigbar.conf (written by meta)"
echo "BENCH-CONF n=$BENCH_N"
STAMP_EXEC=$REPO/tests/rig/scenarios/bench-boot/stamp-exec

# reader DIR: passes the VMM's output on, noting L1's uptime at the VMM's exec and at L2's
# init, and the time Conduit reports for the p2p DMA map.
reader() {
    while IFS= read -r _line || [ -n "$_line" ]; do
        case $_line in
            *BENCH-EXEC\ pid=*)
                _v=${_line#*l1_uptime=}
                echo "${_v%%[!0-9.]*}" > "$1/t_exec" ;;
            *RIG-STAGE\ l2-init*)
                read -r _up _ < /proc/uptime
                echo "$_up" > "$1/t_init" ;;
            *DMA-mapped\ for\ p2p*)
                _v=${_line##* in }
                echo "${_v%% s*}" > "$1/map_s" ;;
        esac
        printf '%s\n' "$_line"
    done
}

# boot SEQ VMM ROUND: one boot, one BENCH-RESULT line.
boot() {
    seq=$1 vmm=$2 round=$3 dir=$TMPDIR/bigbar-$1
    cmdline="$L2_CMDLINE rig.bench_vmm=$vmm"
    case $vmm in
        qemu)
            # A 64-bit hole big enough for the BAR (../shared/rig/NOTES.md, "BAR sizes").
            set -- qemu-system-x86_64 -machine pc,accel=kvm -cpu host -m "$L2_MEM" -smp 1 \
                -nodefaults -display none -serial stdio -monitor none -no-reboot \
                -global i440FX-pcihost.pci-hole64-size=256G \
                -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$cmdline" \
                -device vfio-pci,host="$IVSHMEM_BDF" ;;
        conduit | conduit-p2p)
            dev=$IVSHMEM_BDF
            [ "$vmm" = conduit-p2p ] && dev="$dev,p2p=on"
            set -- env CONDUIT_LOG=info "$CONDUIT" run --kernel "$L2_KERNEL" \
                --initramfs "$L2_INITRD" --cmdline "$cmdline" --cpus 1 --memory "$L2_MEM" \
                --serial stdio --device "$dev" ;;
    esac
    mkdir -p "$dir" && mkfifo "$dir/out" || rig_fail "cannot make $dir/out"
    echo "BENCH-START seq=$seq vmm=$vmm round=$round"
    reader "$dir" < "$dir/out" &
    r=$!
    rig_run_l2 "$STAMP_EXEC" "$@" > "$dir/out" 2>&1
    wait "$r"
    init_s=$(awk -v e="$(cat "$dir/t_exec" 2>/dev/null)" -v i="$(cat "$dir/t_init" 2>/dev/null)" \
        'BEGIN { if (e == "" || i == "") print "none"; else printf "%.2f", i - e }')
    result="BENCH-RESULT seq=$seq vmm=$vmm round=$round rc=$RIG_L2_RC init_s=$init_s map_s=$(cat "$dir/map_s" 2>/dev/null || echo none)"
    echo "$result"
    echo "$result" >> "$TMPDIR/bench-results"
    rig_expect "$vmm-$round-exit" 0 "$RIG_L2_RC"
    rig_check "$vmm-$round-timed" "init_s=$init_s" [ "$init_s" != none ]
}

# Warm L1's 9p page cache (binaries, kernel, initramfs, QEMU's firmware).
cat "$CONDUIT" "$L2_KERNEL" "$L2_INITRD" /usr/share/seabios/bios-256k.bin \
    /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/kvmvapic.bin > /dev/null 2>&1
qemu-system-x86_64 -version > /dev/null
"$CONDUIT" --version > /dev/null 2>&1

: > "$TMPDIR/bench-results"
seq=0 round=1
while [ "$round" -le "$BENCH_N" ]; do
    for vmm in qemu conduit conduit-p2p; do
        seq=$((seq + 1))
        boot "$seq" "$vmm" "$round"
    done
    round=$((round + 1))
done
sed 's/^BENCH-RESULT/BENCH-RESULT-AGAIN/' "$TMPDIR/bench-results"
