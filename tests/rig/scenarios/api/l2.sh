# L2 side of `api`: the nvme the API passed through is there, reads pattern A and takes
# MSI-X interrupts; then the guest waits for the ACPI power button that PUT vm.shutdown
# presses. There is no ACPI button driver in the L2 initramfs, so the script reads the
# power-button status bit itself (PM1a_STS bit 8: bit 0 of I/O port 0x601, through
# /dev/port), as an ACPI OS would on the SCI, and returns: L2's init then powers off.
echo "RIG-API l2-up boot=${RIG_BOOT:-?}"
disk=/dev/nvme0n1
rig_check nvme-disk "$disk appeared" rig_wait_for "$disk" 30 || rig_fail "no $disk"
reads_a() {
    for s in 0 1 2047; do rig_sector_is "$disk" "$s" A || return 1; done
}
rig_check read-pattern-A "sectors 0 1 2047 of $disk" reads_a
pci=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat "$d/class")" = 0x010802 ] && pci=$d
done
vectors=0 fired=0
for f in "$pci"/msi_irqs/*; do
    [ "$(cat "$f")" = msix ] || continue
    irq=${f##*/}
    count=$(grep "^ *$irq:" /proc/interrupts |
        awk '{ n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print n }')
    vectors=$((vectors + 1))
    [ "${count:-0}" -gt 0 ] && fired=$((fired + 1))
done
msix_fired() { [ "$vectors" -ge 2 ] && [ "$fired" -ge 2 ]; }
rig_check nvme-msix "$vectors MSI-X vectors, $fired fired" msix_fired

pressed() {
    _v=$(dd if=/dev/port bs=1 skip=$((0x601)) count=1 2>/dev/null | od -An -tu1)
    [ $((${_v:-0} & 1)) = 1 ]
}
not_pressed() { ! pressed; }
rig_check power-button-idle "PWRBTN_STS clear before the shutdown" not_pressed
echo "RIG-API l2-ready boot=${RIG_BOOT:-?}"
i=0
while ! pressed; do
    [ "$i" -ge 1200 ] && break
    sleep 0.1
    i=$((i + 1))
done
rig_check power-button "PWRBTN_STS set after $i polls of 0.1 s" pressed
