# L1 side: the same guest checks as `boot`, but the kernel is the ELF vmlinux the rig
# extracted from the bzImage (its PVH note is the entry point).
vmlinux=$RIG_DIR/kernel/vmlinux
rig_check elf-kernel "$vmlinux is an ELF image" sh -c "head -c 4 '$vmlinux' | grep -q ELF"
rig_run_l2 "$CONDUIT" run --kernel "$vmlinux" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio
rig_expect conduit-exit 0 "$RIG_L2_RC"
