# L1 side: Debian's QEMU (L0's binary, seen over 9p) runs L2 with KVM and the
# nvme passed through with vfio-pci.
rig_run_l2 qemu-system-x86_64 -machine pc,accel=kvm -cpu host -smp "$L2_CPUS" -m "$L2_MEM" \
    -nodefaults -display none -serial stdio -monitor none -no-reboot \
    -kernel "$L2_KERNEL" -initrd "$L2_INITRD" -append "$L2_CMDLINE" \
    -device vfio-pci,host="$NVME_BDF"
rig_expect qemu-exit 0 "$RIG_L2_RC"
