# L2 side: ivshmem's BAR2 is assigned at full size in the 64-bit window; a word written at
# BAR2 + 60 GiB reads back (and post.sh finds it in the backing file on L0).
dev=$(rig_find_pci 0x1af4:0x1110) || rig_fail "no ivshmem device in L2"
start=$(rig_bar "$dev" 2)
rig_expect bar2-size $((64 << 30)) "$(rig_bar_size "$dev" 2)"
rig_check bar2-above-4g "BAR2 at $start" [ $((start)) -ge $((1 << 32)) ]
echo 1 > "$dev/enable" 2>/dev/null || setpci_missing=1
at=$(printf '0x%x' $(( start + (60 << 30) )))
devmem "$at" 32 0x52494747
rig_expect readback-60g 0x52494747 "$(devmem "$at" 32)"
devmem "$start" 32 0x41424344
rig_expect readback-0 0x41424344 "$(devmem "$start" 32)"
