# L1 side: Conduit runs L2 with the nvme passed through; the L2 checks are the QEMU peer's.
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --device "$NVME_BDF"
rig_expect conduit-exit 0 "$RIG_L2_RC"
# Nothing is left armed on the host once Conduit has exited.
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
