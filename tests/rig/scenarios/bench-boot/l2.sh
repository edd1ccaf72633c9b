# L2 side of the boot benchmark: the guest got what it was given (1 vCPU, its
# memory, the nvme or no nvme), then it idles BENCH_IDLE s while L1 samples the
# VMM's memory; then L2's init powers off (poweroff -f).
rig_expect cpu-count 1 "$(nproc)"
mem_kb=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)
want_kb=$((RIG_BENCH_MEM_MIB * 1024))
mem_fits() { [ "$mem_kb" -le "$want_kb" ] && [ "$mem_kb" -ge $((want_kb * 3 / 4)) ]; }
rig_check guest-memory "MemTotal ${mem_kb} kB for ${RIG_BENCH_MEM_MIB} MiB" mem_fits

nvme_count() {
    n=0
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/class")" = 0x010802 ] && n=$((n + 1))
    done
    echo "$n"
}
if [ "$RIG_BENCH_DEV" = nvme ]; then
    rig_check nvme-disk "/dev/nvme0n1 appeared" rig_wait_for /dev/nvme0n1 30
else
    rig_expect no-nvme 0 "$(nvme_count)"
fi

echo "BENCH-IDLE ${RIG_BENCH_IDLE}s"
sleep "$RIG_BENCH_IDLE"
