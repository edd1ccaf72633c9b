# Hardware mode of tests/rig/run (sourced by it; bash): the scenario runs on this host, with
# its own KVM and IOMMU and the PCI devices named in CONDUIT_HW_DEVICES; there is no L1.
#
# Stages (the verdict names the one that failed):
#   rig set-up     packages (no QEMU), the stock L2 kernel, conduit, the L2 initramfs: the
#                  same as the rig's (lib/setup.sh, lib/l2-init)
#   host check     root, /dev/kvm, `conduit host check` (its host-wide findings: the devices'
#                  own drivers are what the bind changes), and each device exists, is no
#                  bridge and has an IOMMU group
#   device bind    the driver and driver_override of every member of the devices' IOMMU groups
#                  noted, then `conduit host bind` per device (it moves the whole group and
#                  refuses a group the host uses: mounted disk, default route)
#   scenario set-up, L2 boot, assertion
#                  l1.sh runs on this host, in a session of its own, with the rig's
#                  environment contract (RIG_BIND = the devices, RIG_MODE=hw, no *_BDF) and
#                  the rig's markers, watchdog and verdict
#   host restore   `conduit host unbind` for every group the bind moved; then every noted
#                  member must be back on its driver with its driver_override (one RIG-CHECK
#                  hw-restore-ADDRESS each). This runs on failure and on SIGINT/SIGTERM too; a
#                  SIGKILLed run leaves its record in /run/conduit/host-bind.json, and
#                  `conduit host unbind --all` restores it.

# What hardware mode needs from Debian (no QEMU: the host's KVM runs L2).
HW_PACKAGES=(busybox-static kmod cpio jq)
HW_DEVICES=()
HW_SNAPSHOT=
HW_BOUND=0
HW_RESTORED=0
HW_RESTORE_FAILED=

# hw_say LINE...: lines into the log and the markers, as if the console had printed them.
hw_say() { printf '%s\n' "$@" | console_reader; }

hw_driver_of() {
    local l
    l=$(readlink "/sys/bus/pci/devices/$1/driver") && echo "${l##*/}" || echo none
}
hw_override_of() {
    local o=
    read -r o 2>/dev/null < "/sys/bus/pci/devices/$1/driver_override"
    echo "${o:-(null)}"
}
hw_group_of() {
    local l
    l=$(readlink "/sys/bus/pci/devices/$1/iommu_group") && echo "${l##*/}"
}

# hw_session_pids SID: the processes in session SID (l1.sh runs in a session of its own, and
# `timeout` in rig_run_l2 moves the VMM to a process group of its own within it).
hw_session_pids() {
    local sid=$1 p stat rest
    for p in /proc/[0-9]*; do
        # read, not $(cat): no fork per process (a scan under TCG took seconds)
        read -r stat 2>/dev/null < "$p/stat" || continue
        rest=${stat##*) }
        # shellcheck disable=SC2086 # the fields after the command name: state ppid pgrp session
        set -- $rest
        [ "${4:-}" = "$sid" ] && echo "${p#/proc/}"
    done
}
# hw_signal_session SIGNAL SID: send SIGNAL to every process of session SID.
hw_signal_session() {
    local p
    for p in $(hw_session_pids "$2"); do kill -"$1" "$p" 2>/dev/null; done
}
# hw_end_session SID: TERM the session, KILL what is left after 10 s.
hw_end_session() {
    local i
    hw_signal_session TERM "$1"
    for ((i = 0; i < 20; i++)); do
        [ -z "$(hw_session_pids "$1")" ] && return 0
        sleep 0.5
    done
    hw_signal_session KILL "$1"
}
# The watchdog stops the scenario script's whole session, VMM included.
stop_pid() { hw_signal_session "$1" "$2"; }

# hw_parse_devices: HW_DEVICES from CONDUIT_HW_DEVICES (comma- or space-separated
# DDDD:BB:DD.F or BB:DD.F).
hw_parse_devices() {
    local raw a d
    for raw in ${CONDUIT_HW_DEVICES//,/ }; do
        a=${raw,,}
        [[ $a =~ ^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$ ]] ||
            finish 'host check' "CONDUIT_HW_DEVICES: '$raw' is not a PCI address (DDDD:BB:DD.F or BB:DD.F, comma-separated)"
        [[ $a = ????:* ]] || a=0000:$a
        for d in "${HW_DEVICES[@]}"; do
            [ "$d" != "$a" ] || finish 'host check' "CONDUIT_HW_DEVICES names $a twice"
        done
        HW_DEVICES+=("$a")
    done
    [ ${#HW_DEVICES[@]} -gt 0 ] || finish 'host check' "CONDUIT_HW_DEVICES='$CONDUIT_HW_DEVICES' names no device"
}

hw_setup() {
    mkdir -p "$RIG_DIR/logs" "$RIG_DIR/runs" || return 1
    RIG_PACKAGES=("${HW_PACKAGES[@]}")
    setup_packages && setup_debian_kernel
}

# hw_check_devices: each device exists, is no bridge, has an IOMMU group. Ends the run if not.
hw_check_devices() {
    local a d class
    for a in "${HW_DEVICES[@]}"; do
        d=/sys/bus/pci/devices/$a
        [ -e "$d" ] || finish 'host check' "CONDUIT_HW_DEVICES: no PCI device $a on this host (conduit host list --class all lists them)"
        logf "  $a: $(cut -c3- "$d/vendor"):$(cut -c3- "$d/device") class $(cut -c3- "$d/class"), driver $(hw_driver_of "$a"), IOMMU group $(hw_group_of "$a" || echo none)"
        class=$(cat "$d/class")
        [ "${class:0:6}" != 0x0604 ] || finish 'host check' "CONDUIT_HW_DEVICES: $a is a PCI bridge, not a device to pass through"
        [ -n "$(hw_group_of "$a")" ] || finish 'host check' "CONDUIT_HW_DEVICES: $a is in no IOMMU group (is the IOMMU on? conduit host check)"
    done
}

# hw_host_check: KVM and `conduit host check`. Ends the run if the host is not ready.
hw_host_check() {
    local blocking
    [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] ||
        finish 'host check' "no usable /dev/kvm (turn virtualization (VT-x/AMD-V) on in the firmware, modprobe kvm_intel or kvm_amd)"
    "$CONDUIT" host check --memory "$L2_MEM" > "$RUN_DIR/host-check.txt" 2>&1
    sed 's/^/    host check: /' "$RUN_DIR/host-check.txt" >> "$LOG"
    "$CONDUIT" host check --json --memory "$L2_MEM" > "$RUN_DIR/host-check.json" 2>> "$LOG"
    blocking=$(jq -r '.findings[] | select(.status == "fail" and .device == null) |
        "\(.check): \(.message)"' "$RUN_DIR/host-check.json") ||
        finish 'host check' "cannot read the output of conduit host check --json (see the log)"
    [ -z "$blocking" ] || finish 'host check' "conduit host check: ${blocking//$'\n'/; } (the fixes: conduit host check, or the log)"
    log "conduit host check: the host is ready (its findings are in the log)"
}

# hw_lock: one hardware-mode run at a time on this host (they would fight over devices).
hw_lock() {
    local dir=${RIG_LOCK_DIR:-/var/cache/conduit-rig} waited
    mkdir -p "$dir" && exec 7> "$dir/hw.lock" || finish 'host check' "cannot create the lock $dir/hw.lock"
    if ! flock -n 7; then
        log "waiting for the other hardware-mode run to finish"
        waited=$SECONDS
        flock 7
        WAITED=$((SECONDS - waited))
    fi
}

# hw_bind: note every group member's driver and driver_override, then bind each device.
hw_bind() {
    local a m out
    : > "$HW_SNAPSHOT"
    for a in "${HW_DEVICES[@]}"; do
        for m in "/sys/bus/pci/devices/$a/iommu_group/devices/"*; do
            m=${m##*/}
            grep -q "^$m " "$HW_SNAPSHOT" ||
                echo "$m $(hw_driver_of "$m") $(hw_override_of "$m")" >> "$HW_SNAPSHOT"
        done
    done
    sed 's/^/    before: /' "$HW_SNAPSHOT" >> "$LOG"
    HW_BOUND=1
    for a in "${HW_DEVICES[@]}"; do
        out=$("$CONDUIT" host bind "$a" 2>&1)
        local rc=$?
        printf '%s\n' "$out" | sed "s/^/    host bind $a: /" >> "$LOG"
        if [ "$rc" != 0 ]; then
            hw_restore
            finish 'device bind' "conduit host bind $a: ${out//$'\n'/ }${HW_RESTORE_FAILED:+; and the host is NOT restored: $HW_RESTORE_FAILED}"
        fi
    done
    log "bound to vfio-pci: ${HW_DEVICES[*]} ($(awk '{ print $1 "=" $2 }' "$HW_SNAPSHOT" | tr '\n' ' ')before)"
}

# hw_restore: give back every group member the bind moved; check each noted member is back
# on its driver with its driver_override. Sets HW_RESTORE_FAILED (empty: all back).
hw_restore() {
    local m drv ovr now nowo g out done_groups=" " i
    HW_RESTORED=1 HW_RESTORE_FAILED=
    [ -s "$HW_SNAPSHOT" ] || return 0
    while read -r m drv ovr; do
        [ "$(hw_driver_of "$m")" = "$drv" ] && [ "$(hw_override_of "$m")" = "$ovr" ] && continue
        g=$(hw_group_of "$m")
        [[ $done_groups = *" $g "* ]] && continue
        done_groups="$done_groups$g "
        out=$("$CONDUIT" host unbind "$m" 2>&1)
        printf '%s\n' "$out" | sed "s/^/    host unbind $m: /" >> "$LOG"
    done < "$HW_SNAPSHOT"
    while read -r m drv ovr; do
        # A driver may probe asynchronously (nvme): give it a few seconds.
        for ((i = 0; i < 20; i++)); do
            [ "$(hw_driver_of "$m")" = "$drv" ] && break
            sleep 0.5
        done
        now=$(hw_driver_of "$m") nowo=$(hw_override_of "$m")
        if [ "$now" = "$drv" ] && [ "$nowo" = "$ovr" ]; then
            hw_say "RIG-CHECK hw-restore-$m PASS driver $now, driver_override $nowo, as before the run"
        else
            hw_say "RIG-CHECK hw-restore-$m FAIL driver $now (before: $drv), driver_override $nowo (before: $ovr)"
            HW_RESTORE_FAILED="$HW_RESTORE_FAILED${HW_RESTORE_FAILED:+, }$m on $now (was $drv)"
        fi
    done < "$HW_SNAPSHOT"
    [ -z "$HW_RESTORE_FAILED" ] || HW_RESTORE_FAILED="$HW_RESTORE_FAILED (conduit host unbind --all restores what conduit host bind recorded)"
}

# hw_run_script: l1.sh on this host, its output read like L1's console.
hw_run_script() {
    local reader dog rc failed result
    # stdin: an empty pipe that never ends (opened read-write), as a console would be; a VMM
    # with --serial stdio cannot poll /dev/null.
    mkdir -p "$RUN_DIR/tmp" && mkfifo "$RUN_DIR/console" "$RUN_DIR/stdin" ||
        finish 'scenario set-up' "cannot create $RUN_DIR/tmp or the console and stdin fifos"
    hw_say "RIG-STAGE l1-script $SCENARIO_DIR/l1.sh (on this host)"
    console_reader < "$RUN_DIR/console" &
    reader=$!
    setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" TMPDIR="$RUN_DIR/tmp" \
        RIG_CHECKS_FILE="$RUN_DIR/l1-checks" /bin/sh -c \
        'set -a && . "$1/env" && set +a && . "$2/lib/guest.sh" && . "$SCENARIO_DIR/l1.sh"' \
        l1 "$RUN_DIR" "$RIG_SRC" <> "$RUN_DIR/stdin" > "$RUN_DIR/console" 2>&1 &
    L1_PID=$!
    STOPPING="the scenario script" watchdog "$L1_PID" &
    dog=$!
    wait "$L1_PID"
    rc=$?
    # Whatever the script left running (a VMM it did not wait for) goes too.
    hw_end_session "$L1_PID"
    L1_PID=
    wait "$reader"
    kill "$dog" 2>/dev/null
    wait "$dog" 2>/dev/null
    failed=$(grep -c '^FAIL' "$RUN_DIR/l1-checks" 2>/dev/null)
    if [ "$rc" = 0 ] && [ "${failed:-0}" = 0 ]; then result=PASS; else result=FAIL; fi
    hw_say "RIG-RESULT l1 $result failed=${failed:-0} rc=$rc"
}

# hw_cleanup: from run's EXIT trap: stop the script, restore the host if not done yet.
hw_cleanup() {
    if [ -n "$L1_PID" ]; then
        hw_end_session "$L1_PID"
        L1_PID=
    fi
    if [ "$HW_BOUND" = 1 ] && [ "$HW_RESTORED" = 0 ]; then
        log "restoring the host (the run was interrupted)"
        hw_restore
        if [ -n "$HW_RESTORE_FAILED" ]; then
            log "HOST NOT RESTORED: $HW_RESTORE_FAILED"
        else
            log "host restored: every device is back on its driver"
        fi
    fi
}

# hw_run: the whole hardware-mode run; prints the verdict and exits.
hw_run() {
    HW_SNAPSHOT=$RUN_DIR/hw-snapshot
    log "scenario $SCENARIO in hardware mode on $(uname -n) (Linux $(uname -r)), started $START_DATE, repo $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null))"
    hw_parse_devices
    log "devices: ${HW_DEVICES[*]}"
    hw_check_devices
    # Root before the set-up: it may install packages, and everything after it writes sysfs.
    [ "$(id -u)" = 0 ] ||
        finish 'host check' "hardware mode needs root: it binds the devices to vfio-pci through sysfs and gives them to conduit"
    mkdir -p "$RUN_DIR" && : > "$RUN_DIR/markers" || finish 'rig set-up' "cannot create $RUN_DIR"
    with_setup_lock hw_setup || finish 'rig set-up' "set-up failed (see the log)"
    KVER=$(cat "$RIG_DIR/kernel/KVER") DEBIAN_KERNEL=$RIG_DIR/kernel/boot/vmlinuz-$KVER
    setup_conduit
    L2_INITRD=$RUN_DIR/l2-initrd.img
    if [ -n "${RIG_L2_INITRD:-}" ]; then
        # hw-mode's inner runs: L0 built it already, and building it again under TCG takes
        # ~45 s each time.
        [ -f "$RIG_L2_INITRD" ] || finish 'rig set-up' "RIG_L2_INITRD=$RIG_L2_INITRD is no file"
        L2_INITRD=$RIG_L2_INITRD
    else
        logf "packages and kernel ready, conduit copied; building the L2 initramfs"
        build_l2_initrd "$L2_INITRD" || finish 'rig set-up' "cannot build the L2 initramfs"
    fi
    log "L2 kernel $DEBIAN_KERNEL, L2 initramfs $L2_INITRD, conduit $CONDUIT"

    hw_host_check
    hw_lock
    logf "binding the devices"
    hw_bind

    RIG_BIND="${HW_DEVICES[*]}"
    {
        for var in SCENARIO SCENARIO_DIR RIG_SRC RIG_DIR RUN_DIR REPO CONDUIT RIG_MODE \
            L2_CPUS L2_MEM L2_TIMEOUT RIG_BIND; do
            printf "%s='%s'\n" "$var" "${!var}"
        done
        printf "L2_KERNEL='%s'\nL2_INITRD='%s'\n" "$DEBIAN_KERNEL" "$L2_INITRD"
        printf "L2_CMDLINE='%s'\n" "$(l2_cmdline)"
    } > "$RUN_DIR/env" || finish 'scenario set-up' "cannot write $RUN_DIR/env"
    sed 's/^/    env: /' "$RUN_DIR/env" >> "$LOG"

    hw_run_script
    grep -q '^RIG-STAGE l1-script' "$MARKERS" && run_post
    hw_restore
    verdict
    if [ -n "$HW_RESTORE_FAILED" ]; then
        finish 'host restore' "$HW_RESTORE_FAILED; the scenario itself: ${VERDICT_STAGE:+failed at '$VERDICT_STAGE': $VERDICT_REASON}${VERDICT_STAGE:-passed}"
    fi
    finish "$VERDICT_STAGE" "$VERDICT_REASON"
}
