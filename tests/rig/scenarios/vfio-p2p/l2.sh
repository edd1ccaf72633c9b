# L2 side of vfio-p2p: edu DMAs a pattern from guest RAM to ivshmem's BAR2 + RIG_OFFSET,
# i.e. to a guest-physical address in another passthrough device's BAR. With p2p=on the
# IOMMU maps that address (IOVA = GPA) to the device's BAR and the pattern lands; without
# it the IOMMU refuses the write and the word the CPU put there stays.
edu=$(rig_find_pci 0x1234:0x11e8) || rig_fail "no edu"
ivshmem=$(rig_find_pci 0x1af4:0x1110) || rig_fail "no ivshmem"
echo 1 > "$edu/enable" 2>/dev/null
echo 1 > "$ivshmem/enable" 2>/dev/null
eb=$(rig_bar "$edu" 0)
ib=$(rig_bar "$ivshmem" 2)
target=$(printf '0x%x' $((ib + RIG_OFFSET)))
echo "vfio-p2p: ivshmem BAR2 at $ib, DMA target $target, p2p=$RIG_P2P"
rig_expect edu-ident 0x010000ED "$(devmem "$eb" 32)"

# Bus master on for edu (command register bit 2), via sysfs config.
printf '\007' | dd of="$edu/config" bs=1 seek=4 count=1 conv=notrunc 2>/dev/null
pattern=0x50325031
[ "$RIG_P2P" = on ] || pattern=0x50325030
before=0x11111111
devmem 0x90000 32 "$pattern"
devmem "$target" 32 "$before"
rig_expect cpu-wrote-bar "$before" "$(devmem "$target" 32)"
edu_dma() { # SRC DST CMD: edu's DMA engine (0x80 src, 0x88 dst, 0x90 count, 0x98 cmd)
    devmem $((eb + 0x80)) 64 "$1"; devmem $((eb + 0x88)) 64 "$2"; devmem $((eb + 0x90)) 64 4
    devmem $((eb + 0x98)) 64 "$3"
    i=0; while [ $(( $(devmem $((eb + 0x98)) 64) & 1 )) = 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
}
edu_dma 0x90000 0x40000 1          # guest RAM -> edu's buffer
edu_dma 0x40000 "$target" 3        # edu's buffer -> ivshmem's BAR2 (peer to peer)
got=$(devmem "$target" 32)
if [ "$RIG_P2P" = on ]; then
    rig_expect p2p-dma-landed "$pattern" "$got"
else
    rig_expect p2p-dma-refused "$before" "$got"
fi
