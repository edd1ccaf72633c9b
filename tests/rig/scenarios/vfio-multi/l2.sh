# L2 side: each passed-through device works with its own driver or registers.
find_pci() { # VENDOR:DEVICE -> sysfs dir
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor"):$(cat "$d/device")" = "$1" ] && { echo "$d"; return 0; }
    done
    return 1
}
bar() { sed -n "$(($2 + 1))p" "$1/resource" | cut -d' ' -f1; }
drv() { basename "$(readlink "$1/driver" 2>/dev/null)" 2>/dev/null; }

# Guest slots follow the command line: nvme, e1000e, bochs, edu, ivshmem after the host bridge.
rig_expect slots "0000:00:00.0 0000:00:01.0 0000:00:02.0 0000:00:03.0 0000:00:04.0 0000:00:05.0" \
    "$(ls /sys/bus/pci/devices | tr '\n' ' ' | sed 's/ $//')"

nvme=$(find_pci 0x1b36:0x0010) || rig_fail "no nvme"
rig_check nvme-disk "/dev/nvme0n1 appeared" rig_wait_for /dev/nvme0n1 30
rig_expect nvme-driver nvme "$(drv "$nvme")"
rig_check nvme-read "sector 0 holds pattern A" rig_sector_is /dev/nvme0n1 0 A

e1000e=$(find_pci 0x8086:0x10d3) || rig_fail "no e1000e"
rig_check e1000e-netdev "an eth interface appeared" rig_wait_for "$e1000e/net" 20
rig_expect e1000e-driver e1000e "$(drv "$e1000e")"
rig_check e1000e-msix "e1000e uses MSI-X" sh -c "grep -q msix $e1000e/msi_irqs/* 2>/dev/null"

bochs=$(find_pci 0x1234:0x1111) || rig_fail "no bochs-display"
rig_expect bochs-dispi-id 0xB0C5 "$(devmem $(( $(bar "$bochs" 2) + 0x500 )) 16)"

ivshmem=$(find_pci 0x1af4:0x1110) || rig_fail "no ivshmem"
ib=$(bar "$ivshmem" 2)
devmem "$ib" 32 0x4d554c54
rig_expect ivshmem-readback 0x4D554C54 "$(devmem "$ib" 32)"

edu=$(find_pci 0x1234:0x11e8) || rig_fail "no edu"
eb=$(bar "$edu" 0)
echo 1 > "$edu/enable" 2>/dev/null
rig_expect edu-ident 0x010000ED "$(devmem "$eb" 32)"
devmem $((eb + 4)) 32 0x12345678
rig_expect edu-liveness 0xEDCBA987 "$(devmem $((eb + 4)) 32)"
# DMA through the IOMMU both ways, to and from guest RAM below 1 MiB (which Linux keeps
# unused and /dev/mem may touch): RAM 0x90000 -> edu buffer -> RAM 0x91000.
setpci_bm() { # bus master on: command register bit 2 via sysfs config
    printf '\007' | dd of="$edu/config" bs=1 seek=4 count=1 conv=notrunc 2>/dev/null
}
setpci_bm
devmem 0x90000 32 0x45445521
devmem 0x91000 32 0
edu_dma() { # SRC DST CMD
    devmem $((eb + 0x80)) 64 "$1"; devmem $((eb + 0x88)) 64 "$2"; devmem $((eb + 0x90)) 64 4
    devmem $((eb + 0x98)) 64 "$3"
    i=0; while [ $(( $(devmem $((eb + 0x98)) 64) & 1 )) = 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
}
edu_dma 0x90000 0x40000 1
edu_dma 0x40000 0x91000 3
rig_expect edu-dma 0x45445521 "$(devmem 0x91000 32)"
# INTx: uio_pci_generic takes edu; an interrupt edu raises reaches it through Conduit's
# resample irqfd.
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id 2>/dev/null
rig_check edu-uio "edu bound to uio_pci_generic" rig_wait_for /dev/uio0 10
uio_count() { awk '/uio_pci_generic/ { n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print n }' /proc/interrupts; }
before=$(uio_count)
printf '\001\000\000\000' > /dev/uio0   # unmask (irqcontrol)
devmem $((eb + 0x60)) 32 1              # raise an interrupt
i=0; while [ "$(uio_count)" = "${before:-0}" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
after=$(uio_count)
devmem $((eb + 0x64)) 32 1              # acknowledge it
rig_check edu-intx "edu's INTx reached the guest's uio_pci_generic handler ($before -> $after)" \
    [ "${after:-0}" -gt "${before:-0}" ]
grep -e CPU -e uio -e nvme -e eth /proc/interrupts
