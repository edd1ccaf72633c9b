# L1 side: Conduit runs L2 with five devices passed through, in command-line order.
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --device "$NVME_BDF" --device "$E1000E_BDF" --device "$BOCHS_BDF" \
    --device "$EDU_BDF" --device "$IVSHMEM_BDF"
rig_expect conduit-exit 0 "$RIG_L2_RC"
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
