# L2 side of vfio-rom: the ROMs read through sysfs are the files L1 made (md5 on the
# command line): edu's own ROM (2 KiB BAR, 1536-byte image) and bochs-display's from a
# file (4 KiB BAR, 3072-byte image).
check_rom() { # NAME DEV WANT_MD5 WANT_BAR_SIZE WANT_LEN
    rig_check "$1-rom-file" "$2/rom exists" [ -e "$2/rom" ] || return
    rig_expect "$1-rom-bar" "$4" "$(rig_bar_size "$2" 6)"
    echo 1 > "$2/rom"
    cat "$2/rom" > "/tmp/$1.rom"
    echo 0 > "$2/rom"
    rig_expect "$1-rom-len" "$5" "$(wc -c < "/tmp/$1.rom")"
    rig_expect "$1-rom-signature" "55aa" "$(head -c 2 "/tmp/$1.rom" | od -A n -t x1 | tr -d ' ')"
    rig_expect "$1-rom-md5" "$3" "$(md5sum < "/tmp/$1.rom" | cut -d' ' -f1)"
}
edu=$(rig_find_pci 0x1234:0x11e8) || rig_fail "no edu"
bochs=$(rig_find_pci 0x1234:0x1111) || rig_fail "no bochs-display"
check_rom edu "$edu" "$RIG_EDU_MD5" 2048 1536
check_rom bochs "$bochs" "$RIG_BOCHS_MD5" 4096 3072
dmesg | grep -i rom
