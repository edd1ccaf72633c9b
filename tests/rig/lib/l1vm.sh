# Start L1 on L0, follow its console, enforce the per-stage deadlines and derive
# the verdict (sourced by tests/rig/run; bash).
#
# Stages and the markers that end them (printed by lib/l1-init, lib/guest.sh's
# rig_run_l2 and lib/l2-init):
#   L1 boot          ... RIG-STAGE l1-init, RIG-STAGE l1-up
#   scenario set-up  ... RIG-STAGE l1-script (devices bound), RIG-STAGE l2-start
#   L2 boot          ... RIG-STAGE l2-init
#   assertion        ... RIG-RESULT l2 PASS, RIG-RESULT l1 PASS, post.sh checks

# PCI slot of each emulated device on L1's root bus (one IOMMU group each). edu DMAs to
# any 64-bit address (its default mask is 28 bits: no BAR is that low) and has an
# expansion ROM (EDU_ROM, made by lib/mkrom), the only L1 device with one.
declare -A DEV_SLOT=([nvme]=02 [nvme2]=03 [e1000e]=04 [bochs]=05 [edu]=06 [ivshmem]=07)
declare -A DEV_VAR=([nvme]=NVME_BDF [nvme2]=NVME2_BDF [e1000e]=E1000E_BDF
    [bochs]=BOCHS_BDF [edu]=EDU_BDF [ivshmem]=IVSHMEM_BDF)
IVSHMEM_SIZE=64G

bdf_of() { echo "0000:00:${DEV_SLOT[$1]}.0"; }

# The L1 QEMU command line (array L1_CMD).
l1_command() {
    local append="console=ttyS0 intel_iommu=on iommu=pt panic=-1 rig.run=$RUN_DIR"
    [ "$VERBOSE" = 1 ] || append="quiet $append"
    L1_CMD=(qemu-system-x86_64 -accel tcg,thread=multi -machine q35,kernel-irqchip=split
        -global "q35-pcihost.pci-hole64-size=256G" -cpu max -smp "$L1_SMP" -m "$L1_MEM"
        -nodefaults -vga none -display none -serial stdio -monitor none -no-reboot
        -device intel-iommu,intremap=on,caching-mode=on
        -kernel "$L1_KERNEL_IMAGE" -initrd "$RUN_DIR/l1-initrd.img" -append "$append"
        -drive "file=$NVME_IMG,if=none,id=nvme0,format=raw,cache=writeback"
        -device "nvme,drive=nvme0,serial=rig-nvme0,addr=${DEV_SLOT[nvme]}.0"
        -drive "file=$NVME2_IMG,if=none,id=nvme1,format=raw,cache=writeback"
        -device "nvme,drive=nvme1,serial=rig-nvme1,addr=${DEV_SLOT[nvme2]}.0"
        -netdev user,id=net0,restrict=on
        -device "e1000e,netdev=net0,romfile=,addr=${DEV_SLOT[e1000e]}.0"
        -device "bochs-display,addr=${DEV_SLOT[bochs]}.0"
        -device "edu,addr=${DEV_SLOT[edu]}.0,dma_mask=0xffffffffffffffff,romfile=$EDU_ROM"
        -object "memory-backend-file,id=shm0,size=$IVSHMEM_SIZE,mem-path=$IVSHMEM_FILE,share=on,prealloc=off"
        -device "ivshmem-plain,memdev=shm0,addr=${DEV_SLOT[ivshmem]}.0"
        -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap
        -device virtio-9p-pci,fsdev=root,mount_tag=host,addr=08.0)
}

# console_reader: time-stamp L1's console into the log, collect marker lines.
console_reader() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line//$'\r'/}
        stamp
        printf '%s %s\n' "$STAMP" "$line" >> "$LOG"
        [ "$VERBOSE" = 1 ] && printf '%s %s\n' "$STAMP" "$line" >&2
        if [[ $line =~ RIG-(STAGE|CHECK|RESULT|FAIL|L2-EXIT)\ .* ]]; then
            printf '%s\n' "${BASH_REMATCH[0]}" >> "$MARKERS"
            [ "$VERBOSE" = 1 ] || printf '%s %s\n' "$STAMP" "${BASH_REMATCH[0]}" >&2
        fi
    done
}

# current_stage: the stage L1 is in now, from the markers seen so far
# (sets STAGE_NOW and STAGE_LIMIT, the seconds the stage may take).
current_stage() {
    local last
    last=$(grep -o '^RIG-STAGE [a-z0-9-]*\|^RIG-RESULT l2' "$MARKERS" 2>/dev/null | tail -n1)
    case $last in
        '' | 'RIG-STAGE l1-init') STAGE_NOW='L1 boot' STAGE_LIMIT=$L1_BOOT_TIMEOUT ;;
        'RIG-STAGE l1-up' | 'RIG-STAGE l1-script') STAGE_NOW='scenario set-up' STAGE_LIMIT=$SETUP_TIMEOUT ;;
        'RIG-STAGE l2-start') STAGE_NOW='L2 boot' STAGE_LIMIT=$L2_BOOT_TIMEOUT ;;
        *) STAGE_NOW='assertion' STAGE_LIMIT=$CHECK_TIMEOUT ;;
    esac
}

# stop_pid SIGNAL PID: how the watchdog stops L1 (hardware mode stops the script's session).
stop_pid() { kill -"$1" "$2" 2>/dev/null; }

# watchdog PID: kill L1 when a stage or the whole run takes too long.
watchdog() {
    local pid=$1 start=$SECONDS since=$SECONDS seen=0 n why=
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        n=$(grep -c '^RIG-STAGE\|^RIG-RESULT' "$MARKERS" 2>/dev/null)
        [ "$n" != "$seen" ] && seen=$n since=$SECONDS
        current_stage
        if ((SECONDS - since > STAGE_LIMIT)); then
            why="timeout: stage '$STAGE_NOW' took more than ${STAGE_LIMIT} s"
        elif ((SECONDS - start > TIMEOUT)); then
            why="timeout: the run took more than ${TIMEOUT} s (in stage '$STAGE_NOW')"
        else
            continue
        fi
        echo "$why" > "$RUN_DIR/timeout"
        log "$why; stopping ${STOPPING:-L1}"
        stop_pid TERM "$pid"
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || return
            sleep 0.5
        done
        stop_pid KILL "$pid"
        return
    done
}

# run_l1: boot L1 and wait until it powers off or is stopped. Sets L1_RC.
run_l1() {
    mkfifo "$RUN_DIR/console" || return 1
    console_reader < "$RUN_DIR/console" &
    local reader=$!
    "${L1_CMD[@]}" < /dev/null > "$RUN_DIR/console" 2>&1 &
    L1_PID=$!
    watchdog "$L1_PID" &
    local dog=$!
    wait "$L1_PID"
    L1_RC=$?
    L1_PID=
    wait "$reader"
    kill "$dog" 2>/dev/null
    wait "$dog" 2>/dev/null
    return 0
}

# run_post: the scenario's optional L0 check after L1 has exited (post.sh).
run_post() {
    [ -f "$SCENARIO_DIR/post.sh" ] || return 0
    log "running $SCENARIO_DIR/post.sh on L0"
    RIG_CHECKS_FILE=$RUN_DIR/post-checks bash -c \
        'set -a && . "$1/env" && set +a && . "$2/lib/guest.sh" && . "$SCENARIO_DIR/post.sh"' \
        post "$RUN_DIR" "$RIG_SRC" 2>&1 | console_reader
    POST_RC=${PIPESTATUS[0]}
}

# verdict: derive the failed stage from the markers (VERDICT_STAGE empty = pass)
# and say why (VERDICT_REASON).
verdict() {
    local m=$MARKERS fail timeout starts inits results checks_failed passed l2_exit
    count() { grep -c -- "$1" "$m" 2>/dev/null; }
    fail=$(grep -m1 '^RIG-FAIL ' "$m" 2>/dev/null | cut -c10-)
    timeout=$(cat "$RUN_DIR/timeout" 2>/dev/null)
    l2_exit=$(grep '^RIG-L2-EXIT ' "$m" 2>/dev/null | cut -c13- | tr '\n' ' ')
    starts=$(count '^RIG-STAGE l2-start')
    inits=$(count '^RIG-STAGE l2-init')
    results=$(count '^RIG-RESULT l2 ')
    checks_failed=$(grep '^RIG-CHECK [^ ]* FAIL' "$m" 2>/dev/null | cut -d' ' -f2 | tr '\n' ' ')
    passed=$(count '^RIG-CHECK [^ ]* PASS')
    VERDICT_STAGE= VERDICT_REASON=
    because() { VERDICT_STAGE=$1 VERDICT_REASON=${timeout:-${fail:-$2}}; }
    # Hardware mode has no L1: its set-up failures end the run before this.
    if [ "$HW_MODE" != 1 ] && [ "$(count '^RIG-STAGE l1-init')" = 0 ]; then
        because 'L1 boot' "L1 never reached its init (L1 QEMU exit code $L1_RC)"
    elif [ "$HW_MODE" != 1 ] && [ "$(count '^RIG-STAGE l1-up')" = 0 ]; then
        because 'L1 boot' "L1 init did not finish (L1 QEMU exit code $L1_RC)"
    elif [ "$(count '^RIG-STAGE l1-script')" = 0 ]; then
        because 'scenario set-up' "L1 did not get to the scenario's l1.sh"
    elif ((inits < starts)); then
        because 'L2 boot' "L2 was started $starts time(s) but its init ran $inits time(s); L2 VMM exit: ${l2_exit:-none}"
    elif [ -n "$checks_failed" ] || [ "$(count '^RIG-RESULT l2 FAIL')" != 0 ]; then
        because 'assertion' "failed checks: ${checks_failed% }; $(grep -m1 '^RIG-RESULT l2 FAIL' "$m")"
    elif ((starts < L2_BOOTS)); then
        because 'scenario set-up' "the L1 script started $starts of $L2_BOOTS L2 VM(s)"
    elif ((results < starts)); then
        because 'assertion' "L2 gave $results result(s) for $starts boot(s)"
    elif [ "$(count '^RIG-RESULT l1 PASS')" = 0 ]; then
        because 'assertion' "the L1 script failed: $(grep -m1 '^RIG-RESULT l1' "$m" || echo 'L1 gave no result')"
    elif [ "${POST_RC:-0}" != 0 ]; then
        because 'assertion' "post.sh exited with $POST_RC"
    elif [ "$passed" = 0 ]; then
        because 'assertion' "no check passed"
    fi
}
