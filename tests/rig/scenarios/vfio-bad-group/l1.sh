# L1 side: the nvme is left unbound; conduit must refuse it, name it and the fix, exit 1,
# and leave nothing behind (no VFIO interrupt, no open group, the device still unbound).
out=$("$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" --cmdline "$L2_CMDLINE" \
    --memory "$L2_MEM" --serial off --device "$NVME_BDF" 2>&1)
rc=$?
echo "conduit said: $out"
rig_expect conduit-exit 1 "$rc"
rig_check names-device "error names $NVME_BDF" sh -c "echo \"\$1\" | grep -q '$NVME_BDF'" _ "$out"
rig_check names-fix "error gives the fix" sh -c "echo \"\$1\" | grep -q 'conduit host bind'" _ "$out"
rig_check no-vfio-irqs "no vfio interrupts in L1" sh -c '! grep -q vfio /proc/interrupts'
rig_check still-unbound "$NVME_BDF still has no driver" sh -c "[ ! -e /sys/bus/pci/devices/$NVME_BDF/driver ]"
