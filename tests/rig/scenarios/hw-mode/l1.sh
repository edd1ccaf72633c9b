# L1 side of `hw-mode`: L1 is the "real host" of hardware mode. tests/rig/run runs here with
# CONDUIT_HW_DEVICES naming three of L1's devices that are not on vfio-pci (the rig binds
# none: BIND=""): ivshmem and bochs-display on no driver, the nvme on L1's nvme driver
# (L1_EXTRA_MODULES). Each inner run gets a writable RIG_DIR in L1's tmpfs, with the kernel
# L0 cached, uses the L2 initramfs L0 built (RIG_L2_INITRD: building it under TCG takes
# ~45 s), and prints nothing this console would take for its own markers.
T=${TMPDIR:-/run/rig-tmp}
state=/run/conduit/host-bind.json
DEVS="$IVSHMEM_BDF,$BOCHS_BDF,$NVME_BDF"
P9_BDF=0000:00:08.0 # L1's root (L0's, over virtio-9p): `conduit host bind` must refuse it
mkdir -p "$T/hw-rig" "$T/lock" && ln -sfn "$RIG_DIR/kernel" "$T/hw-rig/kernel" ||
    rig_fail "cannot prepare $T/hw-rig"

driver_of() {
    _l=$(readlink "/sys/bus/pci/devices/$1/driver") && basename "$_l" || echo none
}
drivers() { # ADDRESS=DRIVER:OVERRIDE of the three devices
    for _a in $IVSHMEM_BDF $BOCHS_BDF $NVME_BDF; do
        printf '%s=%s:%s ' "$_a" "$(driver_of "$_a")" "$(cat "/sys/bus/pci/devices/$_a/driver_override")"
    done
}
matches() { case $1 in $2) return 0 ;; esac; return 1; }
# inner NAME DEVICES SCENARIO: tests/rig/run SCENARIO in hardware mode; its output goes
# into $T/NAME.out and, with its log, to the console (RIG- markers defanged to rig~,
# prefixed with NAME).
inner() {
    CONDUIT_HW_DEVICES=$2 CONDUIT_BIN=$CONDUIT RIG_DIR=$T/hw-rig RIG_LOCK_DIR=$T/lock \
        RIG_L2_INITRD=$L2_INITRD "$REPO/tests/rig/run" "$3" > "$T/$1.out" 2>&1
    _rc=$?
    show "$1"
    return $_rc
}
show() { # show NAME: the output of inner run NAME, then its log (kept as $T/NAME.log)
    sed "s/RIG-/rig~/g; s/^/$1| /" "$T/$1.out"
    _log=$(sed -n 's/^rig: log: //p' "$T/$1.out" | head -n1)
    : > "$T/$1.log"
    [ -f "$_log" ] && cp "$_log" "$T/$1.log" && sed "s/RIG-/rig~/g; s/^/$1 log| /" "$_log"
}
no_records() { [ ! -e "$state" ] || ! grep -q address "$state"; }
# disk_reads_a: L1's nvme driver has the nvme's disk back, with pattern A.
disk_reads_a() {
    _d=$(rig_until 30 rig_disk_of "$NVME_BDF") || return 1
    rig_sector_is "$_d" 0 A && rig_sector_is "$_d" 2047 A
}

# ---- the starting point ----------------------------------------------------
i=0
while [ "$(driver_of "$NVME_BDF")" != nvme ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
START="$IVSHMEM_BDF=none:(null) $BOCHS_BDF=none:(null) $NVME_BDF=nvme:(null) "
rig_expect start-drivers "$START" "$(drivers)"

# ---- a rig-only scenario is refused ----------------------------------------
inner rig-only "$DEVS" boot
rc=$?
out=$(cat "$T/rig-only.out")
rig_check refuses-rig-only "rc=$rc: $out" matches "$rc $out" "2 *scenario 'boot' does not run on real hardware*HW=yes*"

# ---- a device that is not there: refused before anything is bound ------------
inner no-device "$NVME_BDF,0000:00:1c.5" gpu
rc=$?
rig_check no-device-fails "rc=$rc" [ "$rc" = 1 ]
rig_check no-device-named "the verdict names 0000:00:1c.5 at 'host check'" \
    grep -q "RIG-VERDICT FAIL gpu at stage 'host check': CONDUIT_HW_DEVICES: no PCI device 0000:00:1c.5" "$T/no-device.out"
rig_expect no-device-untouched "$START" "$(drivers)"

# ---- a group the host uses: the bind stops, what was bound is given back ----
inner in-use "$NVME_BDF,$P9_BDF" gpu
rc=$?
rig_check in-use-fails "rc=$rc" [ "$rc" = 1 ]
rig_check in-use-named "the verdict: 'device bind', $P9_BDF refused as the 9p root" \
    grep -q "RIG-VERDICT FAIL gpu at stage 'device bind': conduit host bind $P9_BDF: .*refusing to bind IOMMU group.*9p mount tag host" "$T/in-use.out"
rig_check in-use-nvme-restored "the nvme was bound first, then restored" \
    grep -q "RIG-CHECK hw-restore-$NVME_BDF PASS driver nvme" "$T/in-use.out"
rig_expect in-use-restored "$START" "$(drivers)"
rig_expect in-use-9p-untouched virtio-pci "$(driver_of "$P9_BDF")"
rig_check in-use-no-records "no device left in $state" no_records

# ---- the real run ---------------------------------------------------------
inner gpu "$DEVS" gpu
rc=$?
rig_expect gpu-exit 0 "$rc"
rig_check gpu-verdict "RIG-VERDICT PASS gpu" grep -q "RIG-VERDICT PASS gpu" "$T/gpu.out"
rig_check gpu-bound "the three devices went to vfio-pci, the nvme from nvme" \
    grep -q "bound to vfio-pci: $IVSHMEM_BDF $BOCHS_BDF $NVME_BDF ($IVSHMEM_BDF=none $BOCHS_BDF=none $NVME_BDF=nvme before)" "$T/gpu.out"
l2_passed() { # every L2 check of the three devices passed, in the inner run's markers
    for c in id-0 id-1 id-2 bars-0 bars-assigned-0 bar0-word-matches-host-0 bars-1 msix-2 \
        bar0-word-2 bar0-word-matches-host-2; do
        grep -q "RIG-CHECK $c PASS" "$T/gpu.out" || { echo "no passed $c"; return 1; }
    done
    grep -q "RIG-RESULT l2 PASS" "$T/gpu.out"
}
rig_check gpu-l2-checks "L2 saw the three devices as the host does" l2_passed
rig_check gpu-64g "L2 saw ivshmem's 64 GiB BAR2" grep -q "RIG-CHECK bars-0 PASS .*m64p/1000000000" "$T/gpu.out"
restored() {
    for a in $IVSHMEM_BDF $BOCHS_BDF $NVME_BDF; do
        grep -q "RIG-CHECK hw-restore-$a PASS" "$T/gpu.out" || return 1
    done
}
rig_check gpu-restore-checks "the run checked each device back on its driver" restored
rig_expect gpu-restored "$START" "$(drivers)"
rig_check gpu-no-records "no device left in $state" no_records
rig_check gpu-disk-back "L1's nvme driver has the disk back, pattern A" disk_reads_a
rig_check gpu-no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
rig_check gpu-no-conduit-error "conduit reported no error (its stdin is a pipe, as a console)" \
    sh -c '[ -s "$1" ] && ! grep "conduit: error" "$1"' _ "$T/gpu.log"

# ---- an interrupted run: SIGTERM while L2 boots ---------------------------
CONDUIT_HW_DEVICES=$NVME_BDF CONDUIT_BIN=$CONDUIT RIG_DIR=$T/hw-rig RIG_LOCK_DIR=$T/lock \
    RIG_L2_INITRD=$L2_INITRD "$REPO/tests/rig/run" gpu > "$T/interrupted.out" 2>&1 &
pid=$!
i=0
while ! grep -q 'RIG-STAGE l2-start' "$T/interrupted.out" && [ $i -lt 120 ] && kill -0 $pid 2>/dev/null; do
    sleep 1
    i=$((i + 1))
done
started=$(grep -c 'RIG-STAGE l2-start' "$T/interrupted.out")
sleep 3
rig_expect interrupted-on-vfio vfio-pci "$(driver_of "$NVME_BDF")"
kill -TERM $pid
wait $pid
rc=$?
show interrupted
rig_expect interrupted-l2-started 1 "$started"
rig_expect interrupted-exit 130 "$rc"
rig_check interrupted-restored-log "the run restored the host on its way out" \
    grep -q "host restored: every device is back on its driver" "$T/interrupted.out"
rig_expect interrupted-restored "$START" "$(drivers)"
rig_check interrupted-no-records "no device left in $state" no_records
leftover() { # no process of the inner run is left (its conduit copy lives under hw-rig/runs)
    ! ls -l /proc/[0-9]*/exe 2>/dev/null | grep hw-rig/runs/
}
rig_check interrupted-nothing-left "no conduit of the inner run left" leftover
rig_check interrupted-disk-back "L1's nvme driver has the disk back, pattern A" disk_reads_a
