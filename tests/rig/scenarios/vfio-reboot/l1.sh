# L1 side: one conduit run, two guest boots: the first marks the disk and reboots.
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --on-reboot restart --device "$NVME_BDF"
rig_expect conduit-exit 0 "$RIG_L2_RC"
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
