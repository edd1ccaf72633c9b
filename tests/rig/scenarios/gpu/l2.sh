# Guest side of `gpu`: every device the host passed (rig.devN=ID,CLASS,BAR0..BAR5,MSIX,WORD,
# SAME from gpu/l1.sh) is there with the host's ids and class, every BAR assigned (address in
# its BAR register) at the host's size and type, MSI-X with the host's table size, and
# BAR0's first word reads without a driver: not all-ones, and the host's value where that
# word is an identification register (NVIDIA's PMC_BOOT_0, decoded here).

# The guest's devices besides Conduit's host bridge, in slot order = command-line order.
guest=$(ls /sys/bus/pci/devices | grep -v '^0000:00:00.0$')
rig_expect device-count "${RIG_DEVS:-?}" "$(echo "$guest" | grep -c .)"

# bar_reg CONFIG INDEX: the address programmed in BAR INDEX (with the next dword for 64-bit).
bar_reg() {
    _lo=$(rig_cfg "$1" $((0x10 + 4 * $2)) 4)
    if [ $((_lo & 1)) = 1 ]; then
        echo $((_lo & ~3))
    elif [ $((_lo & 6)) = 4 ]; then
        echo $(((_lo & ~15) | ($(rig_cfg "$1" $((0x14 + 4 * $2)) 4) << 32)))
    else
        echo $((_lo & ~15))
    fi
}
# assigned DEVDIR: every implemented BAR has a non-zero address, and its BAR register holds
# the address sysfs shows.
assigned() {
    _i=0
    while [ "$_i" -lt 6 ] && read -r _s _e _f; do
        if [ $((_e)) != 0 ] && [ $((_f & 0x300)) != 0 ]; then
            _r=$(bar_reg "$1/config" "$_i")
            printf 'BAR%d at %#x, register %#x\n' "$_i" $((_s)) "$_r"
            [ $((_s)) != 0 ] && [ "$_r" = $((_s)) ] || return 1
        fi
        _i=$((_i + 1))
    done < "$1/resource"
}
# nvidia_boot0 WORD: PMC_BOOT_0 decoded as nouveau does (chipset = bits 28:20).
nvidia_boot0() {
    chipset=$((($1 >> 20) & 0x1ff))
    case $((chipset & 0x1f0)) in
        $((0x0e0)) | $((0x0f0)) | $((0x100))) arch="Kepler (GK)" ;;
        $((0x110)) | $((0x120))) arch="Maxwell (GM)" ;;
        $((0x130))) arch="Pascal (GP)" ;;
        $((0x140))) arch="Volta (GV)" ;;
        $((0x160))) arch="Turing (TU)" ;;
        $((0x170))) arch="Ampere (GA)" ;;
        $((0x180))) arch="Hopper (GH)" ;;
        $((0x190))) arch="Ada (AD)" ;;
        $((0x1a0)) | $((0x1b0))) arch="Blackwell (GB)" ;;
        *) arch="unknown to this script" ;;
    esac
    printf 'PMC_BOOT_0 %s: chipset %#x, architecture %#x %s, implementation %#x, revision %#x\n' \
        "$1" "$chipset" $((chipset >> 4)) "$arch" $((chipset & 0xf)) $(($1 & 0xff))
}

i=0
for name in $guest; do
    d=/sys/bus/pci/devices/$name
    eval "spec=\${RIG_DEV$i:-}"
    [ -n "$spec" ] || { rig_check "device-$i" "$name: no rig.dev$i from the host" false; i=$((i + 1)); continue; }
    # shellcheck disable=SC2086 # the fields are comma-separated words
    set -- $(echo "$spec" | tr , ' ')
    id=$1 class=$2 bars="$3 $4 $5 $6 $7 $8" msix=$9
    shift 9
    word=$1 same=$2
    echo "gpu: guest $name = host device $i: $spec"

    rig_expect "id-$i" "$id" "$(cut -c3- "$d/vendor"):$(cut -c3- "$d/device")"
    rig_expect "class-$i" "$class" "$(cut -c3- "$d/class")"
    rig_expect "bars-$i" "$bars" "$(rig_bars "$d")"
    rig_check "bars-assigned-$i" "$(assigned "$d" | tr '\n' ' ')" assigned "$d"

    if [ "$msix" = 0 ]; then
        echo "gpu: $name ($id): MSI-X check skipped: the host device has no MSI-X capability (a rig stand-in; a GPU has one)"
    else
        rig_expect "msix-$i" "$msix vectors" "$(rig_msix_vectors "$d/config") vectors"
    fi

    # BAR0's first word, with no driver on the device: L2's own driver would claim the BAR
    # (and /dev/mem refuses claimed ranges), so a rig stand-in with a guest driver leaves it.
    drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
    if [ -n "$drv" ]; then
        echo "gpu: $name: unbinding L2's $drv driver, to read the device without one"
        echo "$name" > "$d/driver/unbind"
    fi
    echo 1 > "$d/enable" 2>/dev/null # memory decoding on, as a driver's pci_enable_device does
    set -- $(sed -n 1p "$d/resource")
    if [ $(($3 & 0x200)) = 0 ]; then
        rig_check "bar0-word-$i" "BAR0 of $name is not a memory BAR (flags $3)" false
    else
        got=$(devmem $(($1)) 32)
        got=$(printf '0x%08x' $((got)))
        rig_check "bar0-word-$i" "BAR0 + 0 at $1 reads $got (host $word)" [ "$got" != 0xffffffff ]
        if [ "$same" = yes ]; then
            rig_expect "bar0-word-matches-host-$i" "$word" "$got"
        fi
        case $id in 10de:*) echo "gpu: $name: $(nvidia_boot0 "$got")" ;; esac
    fi
    i=$((i + 1))
done
