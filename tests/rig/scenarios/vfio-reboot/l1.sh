# L1 side: one conduit run, two guest boots: the first marks the disk and reboots by a
# triple fault, which Conduit reports before it rebuilds the VM.
export CONDUIT_LOG=warn
{ rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --on-reboot restart --device "$NVME_BDF"
  echo "RIG-REBOOT rc=$RIG_L2_RC"; } 2>&1 | tee "$TMPDIR/run.out"
rig_expect conduit-exit 0 "$(sed -n 's/^RIG-REBOOT rc=//p' "$TMPDIR/run.out")"
rig_check triple-fault-reported "conduit reported the triple fault" \
    grep -q "conduit: warn: vCPU 0: the guest triple-faulted: the machine resets" "$TMPDIR/run.out"
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
