# L2 side of `guest-hostile`: with the drivers unbound, the script abuses the nvme and the
# e1000e through sysfs config writes and /dev/mem, then restores sane values, rebinds the
# drivers and checks that both devices work again. Lines `RIG-HOSTILE hold NAME` ask the L1
# script to look at the host while this script sleeps (HOLD seconds).
HOLD=4

find_pci() { # VENDOR:DEVICE -> sysfs dir
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor"):$(cat "$d/device")" = "$1" ] && { echo "$d"; return 0; }
    done
    return 1
}
# cfg_rd DEV OFFSET LEN: a config register (LEN 1, 2 or 4 bytes, little endian), decimal.
cfg_rd() {
    dd if="$1/config" bs=1 skip=$(($2)) count="$3" 2>/dev/null | od -An -tu1 |
        awk '{ for (i = NF; i >= 1; i--) v = v * 256 + $i } END { print v + 0 }'
}
# cfg_wr DEV OFFSET LEN VALUE: one naturally aligned config write of LEN bytes (one
# process: forks are slow in L2).
cfg_wr() {
    _v=$(($4)) _s=
    _i=0
    while [ "$_i" -lt "$3" ]; do
        _s="$_s\\$(((_v >> 6) & 3))$(((_v >> 3) & 7))$((_v & 7))"
        _v=$((_v >> 8)) _i=$((_i + 1))
    done
    printf "$_s" > /tmp/cfg-bytes
    dd if=/tmp/cfg-bytes of="$1/config" bs="$3" seek=$(($2 / $3)) count=1 conv=notrunc 2>/dev/null
}
# find_cap DEV ID: offset of capability ID in DEV's list.
find_cap() {
    _p=$(cfg_rd "$1" 52 1) _n=0
    while [ "$_p" -ne 0 ] && [ "$_n" -lt 48 ]; do
        [ "$(cfg_rd "$1" "$_p" 1)" = "$(($2))" ] && { echo "$_p"; return 0; }
        _p=$(cfg_rd "$1" $((_p + 1)) 1) _n=$((_n + 1))
    done
    return 1
}
bar_start() { printf '0x%x' "$(sed -n "$(($2 + 1))p" "$1/resource" | cut -d' ' -f1)"; }
bar_size() {
    _l=$(sed -n "$(($2 + 1))p" "$1/resource")
    echo $(( $(echo "$_l" | cut -d' ' -f2) - $(echo "$_l" | cut -d' ' -f1) + 1 ))
}
# set_bar64 DEV INDEX ADDR: program a 64-bit memory BAR (low dword, then high).
set_bar64() {
    cfg_wr "$1" $((0x10 + 4 * $2)) 4 $(($3 & 0xffffffff))
    cfg_wr "$1" $((0x14 + 4 * $2)) 4 $(($3 >> 32))
}
hold() {
    echo "RIG-HOSTILE hold $1"
    sleep "$HOLD"
}
hex32() { printf '0x%08X' $(($1)); }

nvme=$(find_pci 0x1b36:0x0010) || rig_fail "no nvme"
e1000e=$(find_pci 0x8086:0x10d3) || rig_fail "no e1000e"
disk=/dev/nvme0n1
rig_check nvme-disk "$disk appeared" rig_wait_for "$disk" 30 || rig_fail "no $disk"
rig_check read-pattern-A "sector 0 of $disk before the abuse" rig_sector_is "$disk" 0 A
rig_check e1000e-netdev "e1000e has an interface before the abuse" rig_wait_for "$e1000e/net" 20

# The drivers let go (their regions become reachable through /dev/mem).
echo "${nvme##*/}" > "$nvme/driver/unbind"
echo "${e1000e##*/}" > "$e1000e/driver/unbind"
cmd_nvme=$(cfg_rd "$nvme" 4 2)
cfg_wr "$nvme" 4 2 $((cmd_nvme | 2))     # memory decode on, so BAR writes move at once
nb0=$(bar_start "$nvme" 0)
nsize=$(bar_size "$nvme" 0)
cap=$(devmem "$nb0" 32)
echo "guest-hostile: nvme ${nvme##*/} BAR0 $nb0 size $nsize CAP $cap; e1000e ${e1000e##*/}"
rig_check nvme-bar0-small "BAR0 is $nsize bytes (the RAM test needs <= 512 KiB)" [ "$nsize" -le $((512 << 10)) ]

# 1. nvme BAR0 over guest RAM (below 1 MiB, where /dev/mem may write): every page of the
# BAR's would-be range keeps the RAM pattern.
ram=0x80000
pages=$((nsize / 4096))
p=0
while [ "$p" -lt "$pages" ]; do
    devmem $((ram + p * 4096)) 32 $((0x52414d00 + p))
    p=$((p + 1))
done
set_bar64 "$nvme" 0 "$ram"
echo "RIG-HOSTILE moved nvme BAR0 to $ram"
ram_intact() {
    _p=0
    while [ "$_p" -lt "$pages" ]; do
        [ "$(devmem $((ram + _p * 4096)) 32)" = "$(hex32 $((0x52414d00 + _p)))" ] || return 1
        _p=$((_p + 1))
    done
}
rig_check bar-over-ram "RAM at $ram still reads its pattern, BAR0 not mapped there" ram_intact

# 2. Outside every PCI window, in the hole below 4 GiB: nothing answers there.
hole=0xf0000000
set_bar64 "$nvme" 0 "$hole"
echo "RIG-HOSTILE moved nvme BAR0 to $hole"
rig_expect bar-in-hole 0xFFFFFFFF "$(devmem "$hole" 32)"
rig_expect bar-parked-old 0xFFFFFFFF "$(devmem "$nb0" 32)"

# 3. Over the e1000e's MSI-X BAR (BAR3, mostly trapped pages): the e1000e's table still
# answers there, not the nvme's registers.
msix_e=$(find_cap "$e1000e" 0x11) || rig_fail "no MSI-X capability on the e1000e"
ebir=$(( $(cfg_rd "$e1000e" $((msix_e + 4)) 4) & 7 ))
eb=$(bar_start "$e1000e" "$ebir")
devmem $((eb + 8)) 32 0x4a4b
before=$(devmem $((eb + 8)) 32)
set_bar64 "$nvme" 0 "$eb"
echo "RIG-HOSTILE moved nvme BAR0 to $eb (e1000e BAR$ebir)"
rig_expect bar-over-bar "$before" "$(devmem $((eb + 8)) 32)"

# 4. Back to its own address: the nvme's registers are there again, and each device's
# MSI-X table is where its BAR is.
set_bar64 "$nvme" 0 "$nb0"
rig_expect bar-restored "$cap" "$(devmem "$nb0" 32)"
msix_n=$(find_cap "$nvme" 0x11) || rig_fail "no MSI-X capability on the nvme"
tbl=$(cfg_rd "$nvme" $((msix_n + 4)) 4)
[ $((tbl & 7)) = 0 ] || rig_fail "nvme MSI-X table not in BAR0"
t=$((nb0 + (tbl & ~7)))
devmem $((t + 8)) 32 0x5151
rig_expect nvme-table-own 0x00005151 "$(devmem $((t + 8)) 32)"
rig_expect e1000e-table-kept "$before" "$(devmem $((eb + 8)) 32)"

# 5. MSI-X entries whose address is no MSI address, enabled and toggled: never routed.
for v in 0 1 2 3 4 5 6 7; do
    devmem $((t + 16 * v)) 32 $((0x12340000 + v * 0x1000))
    devmem $((t + 16 * v + 4)) 32 0
    devmem $((t + 16 * v + 8)) 32 0x31
    devmem $((t + 16 * v + 12)) 32 0
done
toggles=50
i=0
while [ "$i" -lt "$toggles" ]; do
    cfg_wr "$nvme" $((msix_n + 2)) 2 0x8000
    cfg_wr "$nvme" $((msix_n + 2)) 2 0
    i=$((i + 1))
done
cfg_wr "$nvme" $((msix_n + 2)) 2 0x8000
echo "RIG-HOSTILE msix-bad toggles=$toggles vectors=8"
hold msix-bad
cfg_wr "$nvme" $((msix_n + 2)) 2 0
for v in 0 1 2 3 4 5 6 7; do devmem $((t + 16 * v + 12)) 32 1; done

# 6. MSI and MSI-X enabled together on the e1000e (it has both).
msi_e=$(find_cap "$e1000e" 0x05) || rig_fail "no MSI capability on the e1000e"
msi_ctl=$(cfg_rd "$e1000e" $((msi_e + 2)) 2)
cfg_wr "$e1000e" $((msi_e + 4)) 4 0xfee00000
if [ $((msi_ctl & 0x80)) != 0 ]; then   # 64-bit address: data at +12
    cfg_wr "$e1000e" $((msi_e + 8)) 4 0
    cfg_wr "$e1000e" $((msi_e + 12)) 2 0x31
else
    cfg_wr "$e1000e" $((msi_e + 8)) 2 0x31
fi
etbl=$(cfg_rd "$e1000e" $((msix_e + 4)) 4)
et=$((eb + (etbl & ~7)))
devmem "$et" 32 0xfee00000
devmem $((et + 4)) 32 0
devmem $((et + 8)) 32 0x32
devmem $((et + 12)) 32 0
msi_on() { [ $(( $(cfg_rd "$e1000e" $((msi_e + 2)) 2) & 1 )) = 1 ]; }
msix_on() { [ $(( $(cfg_rd "$e1000e" $((msix_e + 2)) 2) & 0x8000 )) != 0 ]; }
cfg_wr "$e1000e" $((msi_e + 2)) 2 $((msi_ctl | 1))
rig_check msi-enabled "MSI enable reads back 1" msi_on
hold msi
cfg_wr "$e1000e" $((msix_e + 2)) 2 0x8000
echo "guest-hostile: MSI control $(cfg_rd "$e1000e" $((msi_e + 2)) 2), MSI-X control $(cfg_rd "$e1000e" $((msix_e + 2)) 2)"
rig_check msix-wins "MSI-X enable reads back 1" msix_on
msi_off() { ! msi_on; }
rig_check msi-dropped "MSI enable reads back 0 once MSI-X is on" msi_off
hold both
cfg_wr "$e1000e" $((msi_e + 2)) 2 $((msi_ctl | 1))
rig_check msi-refused "MSI enable stays 0 while MSI-X is on" msi_off
hold both-again
cfg_wr "$e1000e" $((msix_e + 2)) 2 0
cfg_wr "$e1000e" $((msi_e + 2)) 2 $((msi_ctl & ~1))
devmem $((et + 12)) 32 1

# 7. A config-space flood: the nvme's whole config space written back 8 times (8192
# config writes), then BAR0 thrown out of the windows and back 25 times.
dd if="$nvme/config" of=/tmp/nvme-config bs=4096 count=1 2>/dev/null
echo "RIG-HOSTILE hold flood-start"
sleep 2
echo "guest-hostile: flood start, L2 uptime $(cut -d' ' -f1 /proc/uptime)"
i=0
while [ "$i" -lt 8 ]; do
    dd if=/tmp/nvme-config of="$nvme/config" bs=4096 count=1 conv=notrunc 2>/dev/null
    i=$((i + 1))
done
i=0
while [ "$i" -lt 25 ]; do
    set_bar64 "$nvme" 0 "$hole"
    set_bar64 "$nvme" 0 "$nb0"
    i=$((i + 1))
done
echo "RIG-HOSTILE flood done, L2 uptime $(cut -d' ' -f1 /proc/uptime)"
hold flood-done
rig_expect bar-after-flood "$cap" "$(devmem "$nb0" 32)"

# 8. Sane values back: the drivers take the devices again and they work.
cfg_wr "$nvme" 4 2 "$cmd_nvme"
echo "${nvme##*/}" > /sys/bus/pci/drivers/nvme/bind
rig_check nvme-back "$disk appeared again" rig_wait_for "$disk" 30
reads_a() { for s in 0 1 2047; do rig_sector_is "$disk" "$s" A || return 1; done; }
rig_check nvme-read-after "sectors 0 1 2047 of $disk after the abuse" reads_a
fired=$(rig_vectors_fired "$nvme")
rig_check nvme-msix-after "$fired nvme MSI-X vectors fired after the rebind" [ "$fired" -ge 1 ]
echo "${e1000e##*/}" > /sys/bus/pci/drivers/e1000e/bind
rig_check e1000e-back "e1000e has an interface again" rig_wait_for "$e1000e/net" 20
rig_check e1000e-msix-after "e1000e uses MSI-X again" sh -c "grep -q msix $e1000e/msi_irqs/* 2>/dev/null"
