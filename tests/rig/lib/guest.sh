# Helpers for scenario scripts (POSIX sh: busybox ash in L2, dash in L1's chroot,
# bash on L0 for post.sh). Sourced before every l1.sh, l2.sh and post.sh.
#
# Marker lines (parsed by tests/rig/run, may appear anywhere in a console line):
#   RIG-CHECK <name> PASS|FAIL <detail>   one check
#   RIG-FAIL <reason>                     why a stage could not go on
#   RIG-STAGE l2-start                    an L2 VMM is about to start (rig_run_l2)

# Where check results are collected (one "PASS name" / "FAIL name" per line).
: "${RIG_CHECKS_FILE:=/tmp/rig-checks}"

# rig_check NAME DETAIL COMMAND [ARGS...]: run COMMAND, report PASS if it succeeds.
rig_check() {
    _name=$1 _detail=$2
    shift 2
    if "$@"; then _r=PASS; else _r=FAIL; fi
    echo "RIG-CHECK $_name $_r $_detail"
    echo "$_r $_name" >> "$RIG_CHECKS_FILE"
    [ "$_r" = PASS ]
}

# rig_expect NAME WANT GOT: PASS when the two strings are equal.
rig_expect() {
    rig_check "$1" "want='$2' got='$3'" [ "$2" = "$3" ]
}

# rig_fail REASON: report why the scenario cannot go on, and stop the script.
rig_fail() {
    echo "RIG-FAIL $*"
    exit 1
}

# rig_wait_for PATH SECONDS: wait until PATH exists; fails after SECONDS.
rig_wait_for() {
    _i=0
    while [ ! -e "$1" ]; do
        [ "$_i" -ge "$2" ] && return 1
        sleep 1
        _i=$((_i + 1))
    done
}

# rig_find_pci VENDOR:DEVICE (0x1af4:0x1110): the sysfs directory of the first such PCI
# function; fails when there is none.
rig_find_pci() {
    for _d in /sys/bus/pci/devices/*; do
        [ "$(cat "$_d/vendor"):$(cat "$_d/device")" = "$1" ] && { echo "$_d"; return 0; }
    done
    return 1
}

# rig_bar DEVDIR N: the start address of resource N (BAR N; 6 is the ROM) from sysfs.
# rig_bar_size DEVDIR N: its size in bytes.
rig_bar() { sed -n "$(($2 + 1))p" "$1/resource" | cut -d' ' -f1; }
rig_bar_size() {
    _line=$(sed -n "$(($2 + 1))p" "$1/resource")
    echo $(( $(echo "$_line" | cut -d' ' -f2) - $(echo "$_line" | cut -d' ' -f1) + 1 ))
}

# rig_pattern LETTER SECTOR: the 512-byte content of SECTOR in pattern LETTER
# (the disk images carry pattern A on nvme and C on nvme2 in their first MiB).
rig_pattern() {
    printf '%-511s\n' "RIG-PATTERN-$1 sector=$2"
}

# rig_sector DEVICE_OR_FILE SECTOR: print one 512-byte sector (O_DIRECT on block devices).
rig_sector() {
    if [ -b "$1" ]; then
        dd if="$1" bs=512 skip="$2" count=1 iflag=direct 2>/dev/null
    else
        dd if="$1" bs=512 skip="$2" count=1 2>/dev/null
    fi
}

# rig_sector_is DEVICE_OR_FILE SECTOR LETTER: does SECTOR hold pattern LETTER?
rig_sector_is() {
    [ "$(rig_sector "$1" "$2")" = "$(rig_pattern "$3" "$2")" ]
}

# rig_run_l2 COMMAND [ARGS...]: run an L2 VMM (QEMU or conduit) in L1 with the
# L2_TIMEOUT deadline; marks the start for the run script's stage tracking and
# leaves the exit code in RIG_L2_RC (124 = timed out).
rig_run_l2() {
    echo "RIG-STAGE l2-start $(basename "$1")"
    timeout -k 5 "${L2_TIMEOUT:-120}" "$@"
    RIG_L2_RC=$?
    echo "RIG-L2-EXIT rc=$RIG_L2_RC"
}
