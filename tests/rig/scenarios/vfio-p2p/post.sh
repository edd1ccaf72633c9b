# L0 side of vfio-p2p: ivshmem's backing file holds what edu wrote by DMA with p2p=on (at
# 0x1000) and only the CPU's word where the DMA without p2p went (at 0x2000).
word_at() { od -A n -t x4 -j "$1" -N 4 "$IVSHMEM_FILE" | tr -d ' '; }
rig_expect file-p2p-dma 50325031 "$(word_at $((0x1000)))"
rig_expect file-no-p2p-dma 11111111 "$(word_at $((0x2000)))"
