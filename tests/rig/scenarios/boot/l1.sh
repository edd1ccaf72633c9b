# L1 side: conduit boots L2 with L2_CPUS vCPUs and no devices.
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio
rig_expect conduit-exit 0 "$RIG_L2_RC"
