# L1 side: Conduit runs L2 with ivshmem (64 GiB BAR2) passed through.
t0=$(cut -d' ' -f1 /proc/uptime)
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --device "$IVSHMEM_BDF"
echo "bigbar: conduit ran for $(echo "$(cut -d' ' -f1 /proc/uptime) - $t0" | bc 2>/dev/null || echo '?') s"
rig_expect conduit-exit 0 "$RIG_L2_RC"
