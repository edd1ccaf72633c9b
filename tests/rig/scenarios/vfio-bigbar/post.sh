# L0 side: the words L2 wrote through the BAR are in ivshmem's backing file.
word_at() { od -A n -t x4 -j "$1" -N 4 "$IVSHMEM_FILE" | tr -d ' '; }
rig_expect file-at-60g 52494747 "$(word_at $((60 << 30)))"
rig_expect file-at-0 41424344 "$(word_at 0)"
