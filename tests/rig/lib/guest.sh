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

# rig_until SECONDS CMD [ARG...]: runs CMD every 0.2 s until it succeeds; fails when SECONDS
# go by without. The one polling loop of the rig scripts (L1 and L2).
rig_until() {
    _until_left=$(($1 * 5))
    shift
    until "$@"; do
        [ "$_until_left" -le 0 ] && return 1
        sleep 0.2
        _until_left=$((_until_left - 1))
    done
}

# rig_wait_for PATH SECONDS: wait until PATH exists; fails after SECONDS.
rig_wait_for() { rig_until "$2" test -e "$1"; }

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

# rig_vectors_fired SYSFS_DIR: how many of the PCI device's MSI/MSI-X vectors
# (SYSFS_DIR/msi_irqs/*) have fired, from /proc/interrupts.
rig_vectors_fired() {
    _fired=0
    for _f in "$1"/msi_irqs/*; do
        [ -e "$_f" ] || continue
        _n=$(awk -v irq="${_f##*/}:" '$1 == irq { n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print n }' /proc/interrupts)
        [ "${_n:-0}" -gt 0 ] && _fired=$((_fired + 1))
    done
    echo "$_fired"
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

# ---- PCI devices through sysfs (used on both sides of the `gpu` scenario) ----

# rig_cfg CONFIG_FILE OFFSET BYTES: the little-endian value (decimal) of BYTES bytes (1, 2
# or 4) at OFFSET of a sysfs `config` file; fails when the file is shorter.
rig_cfg() {
    _v=0 _s=0
    for _b in $(od -An -tu1 -j "$(($2))" -N "$3" "$1" 2>/dev/null); do
        _v=$((_v | (_b << _s)))
        _s=$((_s + 8))
    done
    [ "$_s" = $(($3 * 8)) ] && echo "$_v"
}

# rig_pci_cap CONFIG_FILE ID: the offset (decimal) of the first capability ID in the
# standard capability list; fails when there is none.
rig_pci_cap() {
    _st=$(rig_cfg "$1" 6 2) || return 1
    [ $((_st & 0x10)) != 0 ] || return 1
    _p=$(($(rig_cfg "$1" 0x34 1) & 0xfc)) _n=0
    while [ "$_p" -ge 64 ] && [ "$_n" -lt 48 ]; do
        [ "$(rig_cfg "$1" "$_p" 1)" = $(($2)) ] && echo "$_p" && return 0
        _p=$(($(rig_cfg "$1" $((_p + 1)) 1) & 0xfc))
        _n=$((_n + 1))
    done
    return 1
}

# rig_msix_vectors CONFIG_FILE: the MSI-X table size of the device, 0 without MSI-X.
rig_msix_vectors() {
    if _c=$(rig_pci_cap "$1" 0x11); then
        echo $(( ($(rig_cfg "$1" $((_c + 2)) 2) & 0x7ff) + 1 ))
    else
        echo 0
    fi
}

# rig_bars DEVICE_DIR: the six BARs of a PCI device from its sysfs `resource`, one word
# each: TYPE/SIZE (TYPE io, m32 or m64, with p when prefetchable; SIZE in hex bytes), or -
# for a BAR that is not implemented (or is the upper half of a 64-bit one).
rig_bars() {
    _out= _i=0
    while [ "$_i" -lt 6 ] && read -r _s _e _f; do
        if [ $((_e)) = 0 ] || [ $((_f & 0x300)) = 0 ]; then
            _w=-
        else
            if [ $((_f & 0x100)) != 0 ]; then
                _t=io
            elif [ $((_f & 0x100000)) != 0 ]; then
                _t=m64
            else
                _t=m32
            fi
            [ $((_f & 0x2000)) != 0 ] && _t=${_t}p
            _w=$_t/$(printf '%x' $((_e - _s + 1)))
        fi
        _out="$_out${_out:+ }$_w"
        _i=$((_i + 1))
    done < "$1/resource"
    echo "$_out"
}
# rig_disk_of BDF: the whole-disk block device (/dev/NAME) of PCI device BDF, if it has one.
# With native NVMe multipath (QEMU 10's nvme) the device's own node is a hidden path,
# nvme<S>c<C>n<N>, and the disk is its subsystem's nvme<S>n<N>.
rig_disk_of() {
    _rdo_pci=$(readlink -f "/sys/bus/pci/devices/$1")
    for _rdo_b in /sys/class/block/*; do
        [ -e "$_rdo_b/partition" ] && continue
        case $(readlink -f "$_rdo_b") in "$_rdo_pci"/*) ;; *) continue ;; esac
        _rdo_d=/dev/$(echo "${_rdo_b##*/}" | sed 's/^\(nvme[0-9]*\)c[0-9]*\(n[0-9]*\)$/\1\2/')
        [ -b "$_rdo_d" ] && echo "$_rdo_d" && return 0
    done
    return 1
}
