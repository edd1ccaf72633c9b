# L2 side: boot 1 writes pattern R at sector 8192 and reboots by a triple fault; boot 2 (a rebuilt VM, the
# device reset in between) finds R, reads pattern A, and its nvme interrupts fire.
disk=/dev/nvme0n1
rig_wait_for "$disk" 30 || rig_fail "no $disk"
if rig_sector_is "$disk" 8192 R; then
    echo "vfio-reboot: second boot"
    rig_check read-pattern-A "sector 0 of $disk after the reboot" rig_sector_is "$disk" 0 A
    rig_check marker-R "the first boot's write survived the reboot" rig_sector_is "$disk" 8192 R
    pci=
    for d in /sys/bus/pci/devices/*; do [ "$(cat "$d/class")" = 0x010802 ] && pci=$d; done
    fired=0
    for f in "$pci"/msi_irqs/*; do
        irq=${f##*/}
        n=$(awk -v irq="$irq:" '$1 == irq { n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print n }' /proc/interrupts)
        [ "${n:-0}" -gt 0 ] && fired=$((fired + 1))
    done
    rig_check msix-after-reboot "$fired nvme MSI-X vectors fired after the reboot" [ "$fired" -ge 1 ]
else
    echo "vfio-reboot: first boot, marking the disk and rebooting"
    rig_pattern R 8192 | dd of="$disk" bs=512 seek=8192 count=1 oflag=direct conv=fsync 2>/dev/null
    # The kernel reboots by a triple fault (no IDT, int3): Conduit must report it.
    echo triple > /sys/kernel/reboot/type || echo "vfio-reboot: cannot pick the triple-fault reboot"
    reboot -f
    sleep 30
fi
