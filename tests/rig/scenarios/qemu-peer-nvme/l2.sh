# L2 side: L2's nvme driver drives the passed-through nvme: it reads L0's
# pattern A, writes pattern B (post.sh finds it in the disk image on L0), and
# its MSI-X vectors fire.
disk=/dev/nvme0n1
rig_check nvme-disk "$disk appeared" rig_wait_for "$disk" 30 || rig_fail "no $disk"
pci=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/class")" = 0x010802 ] && pci=$d
done
rig_expect nvme-driver nvme "$(basename "$(readlink "$pci/driver")")"

reads_a() {
    for s in 0 1 1000 2047; do rig_sector_is "$disk" "$s" A || return 1; done
}
rig_check read-pattern-A "sectors 0 1 1000 2047 of $disk" reads_a

B_SECTORS="4096 4097 4098 4099 4100 4101 4102 4103"
writes_b() {
    for s in $B_SECTORS; do
        rig_pattern B "$s" | dd of="$disk" bs=512 seek="$s" count=1 oflag=direct conv=fsync 2>/dev/null ||
            return 1
    done
}
reads_b() {
    for s in $B_SECTORS; do rig_sector_is "$disk" "$s" B || return 1; done
}
rig_check write-pattern-B "sectors 4096-4103 of $disk (O_DIRECT)" writes_b
rig_check reread-pattern-B "sectors 4096-4103 of $disk" reads_b

# MSI-X: the device's vectors (msi_irqs/* = msix) and their counts in /proc/interrupts.
vectors=0 fired=0 detail=
for f in "$pci"/msi_irqs/*; do
    [ "$(cat "$f")" = msix ] || continue
    irq=${f##*/}
    line=$(grep "^ *$irq:" /proc/interrupts)
    count=$(echo "$line" | awk '{ n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print n }')
    vectors=$((vectors + 1))
    [ "$count" -gt 0 ] && fired=$((fired + 1))
    detail="$detail ${line##* }=$count"
done
grep -e CPU -e nvme /proc/interrupts
msix_fired() { [ "$vectors" -ge 2 ] && [ "$fired" -ge 2 ]; }
rig_check nvme-msix "$vectors MSI-X vectors, $fired fired:$detail" msix_fired
