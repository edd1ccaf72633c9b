# L1 side: the L1 kernel has /dev/iommu and /dev/vfio/devices/vfioN; Conduit picks iommufd.
rig_check iommufd-present "/dev/iommu and the nvme's VFIO cdev exist" \
    sh -c "[ -c /dev/iommu ] && ls /sys/bus/pci/devices/$NVME_BDF/vfio-dev/ | grep -q vfio"
err=$TMPDIR/conduit.err
export CONDUIT_LOG=debug
rig_run_l2 sh -c '"$@" 2> "$0"' "$err" "$CONDUIT" run \
    --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" --cmdline "$L2_CMDLINE" \
    --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio --iommu iommufd --device "$NVME_BDF"
unset CONDUIT_LOG
grep -v ': debug: ' "$err"
rig_expect conduit-exit 0 "$RIG_L2_RC"
rig_check used-iommufd "conduit attached the nvme through iommufd" grep -q 'behind iommufd' "$err"
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'

# p2p=on: iommufd's IOMMU_IOAS_MAP pins pages, and a BAR mmap has none, so conduit refuses
# --iommu iommufd with p2p naming the device and BAR, and pointing at type1; in auto mode
# a VM with a p2p device goes through type1 (a payload VM, no L2 kernel needed).
out=$("$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" --memory "$L2_MEM" \
    --serial off --iommu iommufd --device "$NVME_BDF,p2p=on" 2>&1 < /dev/null)
rc=$?
echo "vfio-iommufd p2p: rc=$rc: $out"
rig_expect iommufd-p2p-exit 1 "$rc"
rig_check iommufd-p2p-message "names the device and BAR and suggests type1" sh -c \
    'printf "%s" "$1" | grep -F "$2: cannot DMA-map BAR" | grep -qF -- "--iommu type1"' _ "$out" "$NVME_BDF"
printf '\364\353\375' > "$TMPDIR/hlt.bin"
printf '{"payload": {"path": "%s"}, "serial": "off", "devices": [{"address": "%s", "p2p": true}]}' \
    "$TMPDIR/hlt.bin" "$NVME_BDF" > "$TMPDIR/p2p.json"
CONDUIT_LOG=debug timeout --preserve-status -s TERM 15 "$CONDUIT" run --config "$TMPDIR/p2p.json" \
    > "$TMPDIR/auto.err" 2>&1 < /dev/null
rc=$?
grep -e behind -e p2p -e error "$TMPDIR/auto.err"
rig_expect auto-p2p-stopped 143 "$rc"
rig_check auto-p2p-type1 "auto mode put the p2p device behind type1 and mapped its BAR" sh -c \
    "grep -q 'behind type1' '$TMPDIR/auto.err' && grep -q 'DMA-mapped for p2p' '$TMPDIR/auto.err'"
rig_check no-vfio-irqs-after-p2p "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
