# L0 side, after L1 exited: L2's writes reached the per-run disk image.
image_b() {
    for s in 4096 4097 4098 4099 4100 4101 4102 4103; do rig_sector_is "$NVME_IMG" "$s" B || return 1; done
}
rig_check image-pattern-B "sectors 4096-4103 of $NVME_IMG" image_b
rig_check image-pattern-A "sector 0 of $NVME_IMG untouched" rig_sector_is "$NVME_IMG" 0 A
