# L2 side of `faults`: the nvme works (pattern A, MSI-X fired), then, per rig.boot=: `kill`
# and `term` wait to be stopped from outside, `final` returns (L2's init powers off).
disk=/dev/nvme0n1
rig_check nvme-disk "$disk appeared (boot ${RIG_BOOT:-?})" rig_wait_for "$disk" 30 || rig_fail "no $disk"
reads_a() { for s in 0 1 2047; do rig_sector_is "$disk" "$s" A || return 1; done; }
rig_check read-pattern-A "sectors 0 1 2047 of $disk (boot ${RIG_BOOT:-?})" reads_a
pci=
for d in /sys/bus/pci/devices/*; do [ "$(cat "$d/class")" = 0x010802 ] && pci=$d; done
fired=$(rig_vectors_fired "$pci")
rig_check nvme-msix "$fired nvme MSI-X vectors fired (boot ${RIG_BOOT:-?})" [ "$fired" -ge 1 ]
echo "RIG-FAULTS l2-up boot=${RIG_BOOT:-?}"
case ${RIG_BOOT:-} in
    kill | term) sleep 600 ;;
esac
