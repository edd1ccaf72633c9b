# L1 side of `host`: the nvme starts on L1's own nvme driver (L1_EXTRA_MODULES) with
# pattern A on its disk. `conduit host check` must find L1's emulated VT-d ready,
# `host list` must show the emulated devices in their groups, `host bind` must take
# the nvme from the nvme driver to vfio-pci (its disk disappears), `run --gpus
# 1b36:0010x1` must pick it (nvme2 stays on the nvme driver, so it is not ready) and
# L2 reads and writes it (../vfio-nvme/l2.sh), and `host unbind` must give it back to
# the nvme driver with its data: pattern A, and the pattern B sectors L2 wrote.
dev=/sys/bus/pci/devices/$NVME_BDF
state=/run/conduit/host-bind.json
T=${TMPDIR:-/run/rig-tmp}
B_SECTORS="4096 4097 4098 4099 4100 4101 4102 4103"

driver_of() { # driver_of BDF: the name of its driver, or none
    _l=$(readlink "/sys/bus/pci/devices/$1/driver") && basename "$_l" || echo none
}
# wait_disk BDF SECONDS: wait for the device's disk and its /dev node; print it.
wait_disk() { rig_until "$2" rig_disk_of "$1"; }
# wait_no_disk BDF SECONDS: wait until the device has no disk any more.
no_disk() { ! rig_disk_of "$1" > /dev/null; }
wait_no_disk() { rig_until "$2" no_disk "$1"; }
matches() { case $1 in $2) return 0 ;; esac; return 1; }
group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
reads_a() { rig_sector_is "$1" 0 A && rig_sector_is "$1" 2047 A; }
reads_b() {
    for s in $B_SECTORS; do rig_sector_is "$1" "$s" B || return 1; done
}

# ---- start: the nvme is L1's disk -------------------------------------------
group=$(group_of "$NVME_BDF")
[ -n "$group" ] || rig_fail "$NVME_BDF is in no IOMMU group"
disk=$(wait_disk "$NVME_BDF" 30) ||
    rig_fail "L1's nvme driver brought up no disk for $NVME_BDF (driver: $(driver_of "$NVME_BDF"))"
rig_expect start-driver nvme "$(driver_of "$NVME_BDF")"
rig_check start-pattern-A "$disk sectors 0 and 2047 (L1's nvme driver)" reads_a "$disk"

# ---- conduit host check -----------------------------------------------------
"$CONDUIT" host check > "$T/check.txt"
rc=$?
sed 's/^/host check: /' "$T/check.txt"
rig_expect check-exit 0 "$rc"
"$CONDUIT" host check --json > "$T/check.json" || true
status_of() { jq -r --arg c "$1" '[.findings[] | select(.check == $c) | .status] | join(",")' "$T/check.json"; }
for c in iommu interrupt-remapping cmdline-iommu cmdline-iommu-pt module-vfio module-vfio-pci \
    vfio-dma-backend dev-vfio memlock; do
    rig_expect "check-$c" pass "$(status_of "$c")"
done
rig_expect check-ready true "$(jq -r .ready "$T/check.json")"
ngroups=$(ls /sys/kernel/iommu_groups | wc -l)
msg=$(jq -r '.findings[] | select(.check == "iommu") | .message' "$T/check.json")
rig_check check-iommu-vtd "$msg" matches "$msg" "IOMMU on: dmar* (Intel VT-d); $ngroups IOMMU groups"
# What the kernel itself says about remapping, against the check's verdict above.
rig_check kernel-intremap "dmesg: Enabled IRQ remapping" sh -c 'dmesg | grep -q "Enabled IRQ remapping"'

# ---- conduit host list ------------------------------------------------------
"$CONDUIT" host list --json --class all > "$T/list.json"
rig_expect list-exit 0 "$?"
"$CONDUIT" host list --class all | sed 's/^/host list: /'
entry() { # entry BDF: id driver group members ready, from the list
    jq -r --arg a "$1" '.[] | select(.address == $a) |
        "\(.id) \(.driver) \(.iommu_group) \(.iommu_group_members | join(",")) \(.ready)"' "$T/list.json"
}
rig_expect list-nvme "1b36:0010 nvme $group $NVME_BDF false" "$(entry "$NVME_BDF")"
why=$(jq -r --arg a "$NVME_BDF" '.[] | select(.address == $a) | .not_ready_because | join("; ")' "$T/list.json")
rig_check list-nvme-why "$why" matches "$why" "*bound to nvme, not vfio-pci*"
list_groups() { # every emulated device is listed, in the group sysfs gives it
    for bdf in $NVME_BDF $NVME2_BDF $E1000E_BDF $BOCHS_BDF $EDU_BDF $IVSHMEM_BDF; do
        want=$(group_of "$bdf")
        got=$(jq -r --arg a "$bdf" '.[] | select(.address == $a) | .iommu_group' "$T/list.json")
        [ -n "$want" ] && [ "$want" = "$got" ] || { echo "$bdf: group '$got' listed, '$want' in sysfs"; return 1; }
    done
}
rig_check list-groups "the six emulated devices with their IOMMU groups" list_groups

# ---- conduit host bind ------------------------------------------------------
# L1's root is L0's over virtio-9p at 00:08.0: bind must refuse its group and change nothing.
P9_BDF=0000:00:08.0
used_9p() {
    jq -r --arg a "$P9_BDF" '.[] | select(.address == $a) | .host_use[]' "$T/list.json" |
        grep -q '(9p mount tag host) is mounted on /$'
}
rig_check list-9p-used "$P9_BDF: host_use names the 9p root" used_9p
out=$("$CONDUIT" host bind "$P9_BDF" 2>&1)
rc=$?
echo "$out" | sed 's/^/host bind 9p: /'
rig_check bind-refuses-9p "rc=$rc: $out" matches "$rc $out" "1 *refusing to bind IOMMU group*9p mount tag host*--force*"
rig_expect bind-9p-untouched virtio-pci "$(driver_of "$P9_BDF")"
out=$("$CONDUIT" host bind "$NVME_BDF" 2>&1)
rc=$?
echo "$out" | sed 's/^/host bind: /'
rig_expect bind-exit 0 "$rc"
rig_expect bind-driver vfio-pci "$(driver_of "$NVME_BDF")"
rig_check bind-vfio-group "/dev/vfio/$group" [ -c "/dev/vfio/$group" ]
rig_check bind-disk-gone "$disk and the nvme's disk are gone" \
    sh -c 'wait_() { i=0; while [ -e "$1" ]; do [ $i -ge 5 ] && return 1; sleep 1; i=$((i+1)); done; }; wait_ "$1"' _ "$disk"
rig_check bind-no-disk "no disk below $NVME_BDF" wait_no_disk "$NVME_BDF" 5
rec=$(jq -r --arg a "$NVME_BDF" '.devices[] | select(.address == $a) | "\(.original_driver) \(.iommu_group)"' "$state")
rig_expect bind-state "nvme $group" "$rec"
out=$("$CONDUIT" host bind "$NVME_BDF" 2>&1)
rc=$?
rig_check bind-again "rc=$rc: $out" matches "$rc $out" "0 *$NVME_BDF already on vfio-pci*"
"$CONDUIT" host list --json --id 1b36:0010 > "$T/ready.json"
ready=$(jq -r '[.[] | "\(.address)=\(.ready)"] | join(" ")' "$T/ready.json")
rig_expect ready-after-bind "$NVME_BDF=true $NVME2_BDF=false" "$ready"

# ---- conduit run --gpus -----------------------------------------------------
out=$("$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" --cmdline "$L2_CMDLINE" \
    --memory "$L2_MEM" --serial off --gpus 1b36:0010x2 2>&1)
rc=$?
echo "$out" | sed 's/^/run --gpus x2: /'
rig_check gpus-not-enough "rc=$rc, names $NVME2_BDF on nvme" matches "$rc $out" \
    "1 *2 wanted, 1 ready*$NVME2_BDF: 1b36:0010 not ready: it is bound to nvme*"
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --gpus 1b36:0010x1
rig_expect conduit-exit 0 "$RIG_L2_RC"
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'

# ---- conduit host unbind ----------------------------------------------------
out=$("$CONDUIT" host unbind "$NVME_BDF" 2>&1)
rc=$?
echo "$out" | sed 's/^/host unbind: /'
rig_expect unbind-exit 0 "$rc"
rig_expect unbind-driver nvme "$(driver_of "$NVME_BDF")"
rig_expect unbind-override "(null)" "$(cat "$dev/driver_override")"
disk=$(wait_disk "$NVME_BDF" 30)
rig_check unbind-disk-back "${disk:-no disk} below $NVME_BDF" [ -n "$disk" ] ||
    rig_fail "the nvme's disk did not come back after unbind"
rig_check unbind-pattern-A "$disk sectors 0 and 2047" reads_a "$disk"
rig_check unbind-pattern-B "$disk sectors 4096-4103, written by L2" reads_b "$disk"
rig_check unbind-state "no record of $NVME_BDF in $state" \
    sh -c '[ ! -e "$1" ] || ! grep -q "$2" "$1"' _ "$state" "$NVME_BDF"
out=$("$CONDUIT" host unbind --all 2>&1)
rc=$?
rig_check unbind-again "rc=$rc: $out" matches "$rc $out" "0 nothing to restore*"
