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
