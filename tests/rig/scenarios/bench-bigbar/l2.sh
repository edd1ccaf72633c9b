# L2 side of the big-BAR benchmark: the guest sees ivshmem with its 64 GiB BAR2, then
# powers off.
dev=$(rig_find_pci 0x1af4:0x1110) || rig_fail "no ivshmem device in L2 ($RIG_BENCH_VMM)"
rig_expect bar2-size $((64 << 30)) "$(rig_bar_size "$dev" 2)"
