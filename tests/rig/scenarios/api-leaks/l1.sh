# L1 side of `api-leaks`: one `conduit serve`, 20 cycles of vm.create, vm.boot, vm.shutdown,
# vm.delete with the nvme passed through and 128 MiB of RAM (pinning and IOMMU-mapping RAM
# is most of a cycle's cost here), the guest being the PVH vmlinux (no decompression).
# Cycles 1 and 20 run the guest to its init (nvme driver, MSI-X vectors armed, seen in
# vm.info) and shut down through the ACPI power button (../api/l2.sh); cycles 2-19 wait
# until the kernel prints its command line (early console, loglevel=6; rig.boot=early-N tells
# the cycles apart) and shut down with timeout 0 (forced off). After cycles 1 and 20, serve's
# open fds, threads and VmRSS. At most 2 early guests may reset or hang before their first
# lines (seen about once in 150 early boots under the nested emulation: a reset while the
# first lines print, or no output at all with the vCPU running in L1's KVM): those are
# forced off too, so every cycle still goes through create, boot, shutdown and delete.
S=$TMPDIR/api.sock
LOG=$TMPDIR/serve.log
BODY=$TMPDIR/body
CYCLES=20
KERNEL=$RIG_DIR/kernel/vmlinux

. "$RIG_SRC/lib/api.sh"
# api_pair M1 ROUTE1 JSON_FILE M2 ROUTE2: two requests in one curl (a process costs about
# half a second in L1); prints both statuses; the first answer is in $BODY.1.
api_pair() {
    rm -f "$BODY" "$BODY.1"
    curl -sS --max-time 150 --unix-socket "$S" -o "$BODY.1" -w '%{http_code} ' -X "$1" \
        -H 'Content-Type: application/json' --data-binary "@$3" "http://localhost/api/v1/$2" \
        --next -sS --max-time 150 --unix-socket "$S" -o "$BODY" -w '%{http_code}' -X "$4" \
        "http://localhost/api/v1/$5"
}
fail() { # REASON: the end of serve's output, then give up
    tail -n 30 "$LOG"
    rig_fail "$@"
}
vm_json() { # FILE N CMDLINE_EXTRA
    jq -n --arg k "$KERNEL" --arg i "$L2_INITRD" --arg c "$L2_CMDLINE rig.boot=$2 $3" \
        --arg m "$L2_MEM" --arg d "$NVME_BDF" --argjson n "$L2_CPUS" \
        '{kernel: {path: $k, initramfs: $i, cmdline: $c}, cpus: $n, memory: $m,
          serial: "stdio", on_reboot: "exit", devices: [{address: $d}]}' > "$1"
}
# hang_watch: when the cycles make no progress for 120 s, show once what L1's kernel and
# serve's threads are doing (sysrq w and l into dmesg, each thread's kernel stack).
PROGRESS=$TMPDIR/progress
hang_watch() {
    _last= _same=0
    while sleep 5; do
        _now=$(cat "$PROGRESS" 2> /dev/null)
        if [ "$_now" = "$_last" ]; then _same=$((_same + 5)); else _same=0 _last=$_now; fi
        [ "$_same" = 120 ] || continue
        echo "api-leaks: no progress for 120 s at '$_now'"
        dump_state
    done
}
# dump_state: serve's threads (state, wait channel, kernel stack) and L1's kernel log
# after sysrq w and l.
dump_state() {
    echo "api-leaks: serve's threads and L1's kernel log:"
    for _t in /proc/$(pidof conduit | cut -d' ' -f1)/task/*; do
        echo "  $(cat "$_t/comm") state $(cut -d' ' -f3 "$_t/stat") wchan $(cat "$_t/wchan")"
        sed 's/^/      /' "$_t/stack" 2> /dev/null
    done
    echo w > /proc/sysrq-trigger
    echo l > /proc/sysrq-trigger
    dmesg | tail -n 150
}
sample() { # NAME: serve's fds, threads and VmRSS now, as NAME_fds NAME_threads NAME_rss
    _p=$(pidof conduit)
    eval "$1_fds=$(ls "/proc/$_p/fd" | wc -l) $1_threads=$(ls "/proc/$_p/task" | wc -l)"
    eval "$1_rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$_p/status")"
    echo "api-leaks: $1: fds $(ls "/proc/$_p/fd" | wc -l) threads $(ls "/proc/$_p/task" | wc -l) $(grep VmRSS "/proc/$_p/status")"
    ls -l "/proc/$_p/fd" | sed 's/^.* \([0-9]* ->\)/    \1/' | tail -n +2
}

command -v curl > /dev/null || rig_fail "no curl on L0"
command -v jq > /dev/null || rig_fail "no jq on L0"
[ -f "$KERNEL" ] || rig_fail "no $KERNEL (the rig's set-up extracts it)"
# serve's output (with the guests' consoles and, at info level, why each VM stopped) goes
# to $LOG; only marker lines and conduit's warnings and errors go on to L1's console, which
# is slow.
( CONDUIT_LOG=info "$CONDUIT" serve --api-socket "$S" < /dev/null 2>&1
  echo "RIG-LEAKS serve-exit rc=$?" ) |
    tee "$LOG" | grep --line-buffered -e 'RIG-' -e 'conduit: warn' -e 'conduit: error' &
wait_api
hang_watch &
watcher=$!
echo '{"timeout_secs": 90}' > "$TMPDIR/graceful.json"
echo '{"timeout_secs": 0}' > "$TMPDIR/forced.json"

banners=0 self_stopped=0 stuck=0 silent_seen=0
n=1
while [ "$n" -le "$CYCLES" ]; do
    t0=$(cut -d' ' -f1 /proc/uptime)
    echo "cycle $n: create and boot" > "$PROGRESS"
    if [ "$n" = 1 ] || [ "$n" = "$CYCLES" ]; then
        vm_json "$TMPDIR/vm.json" "$n" ""
        expect_api "create-$n" 204 PUT vm.create "$TMPDIR/vm.json"
        echo "RIG-STAGE l2-start conduit-api cycle $n"
        expect_api "boot-$n" 204 PUT vm.boot || rig_fail "cycle $n did not boot"
        wait_log "RIG-API l2-ready boot=$n" 1 150 || fail "cycle $n: L2 did not get ready"
        echo "cycle $n: info and shutdown" > "$PROGRESS"
        expect_api "info-$n" 200 GET vm.info
        rig_check "vectors-armed-$n" "armed: $(jq -c '.devices[0].msix_vectors_armed' "$BODY")" \
            jq_true '.devices[0].msix_vectors_armed | length >= 2'
        expect_api "shutdown-$n" 200 PUT vm.shutdown "$TMPDIR/graceful.json"
        rig_check "shutdown-graceful-$n" "$(head -c 200 "$BODY")" jq_true '.outcome.reason == "power-off"'
    else
        vm_json "$TMPDIR/early.json" "early-$n" "earlycon=uart8250,io,0x3f8 loglevel=6"
        got=$(api_pair PUT vm.create "$TMPDIR/early.json" PUT vm.boot)
        [ "$got" = "204 204" ] || fail "cycle $n: vm.create, vm.boot: $got: $(cat "$BODY.1" "$BODY")"
        silent=
        if wait_log "rig.boot=early-$n earlycon" 1 60; then
            banners=$((banners + 1))
        else
            silent=yes silent_seen=$((silent_seen + 1))
            echo "api-leaks: cycle $n: no kernel output in 60 s"
            [ "$silent_seen" = 1 ] && dump_state
        fi
        echo "cycle $n: shutdown and delete" > "$PROGRESS"
        got=$(api_pair PUT vm.shutdown "$TMPDIR/forced.json" PUT vm.delete)
        if [ "$got" = "409 204" ] && grep -q "the VM is shut down" "$BODY.1"; then
            # The early guest stopped by itself first (the log says how); the cycle
            # still went through create, boot and teardown.
            self_stopped=$((self_stopped + 1))
            echo "api-leaks: cycle $n: the guest had stopped by itself: $(tail -n 8 "$LOG")"
        else
            # Still running but silent: stuck before its console; forced off here.
            [ -n "$silent" ] && stuck=$((stuck + 1))
            [ "$got" = "200 204" ] || fail "cycle $n: vm.shutdown, vm.delete: $got: $(cat "$BODY.1" "$BODY")"
            jq -e '.outcome.reason == "forced-off"' "$BODY.1" > /dev/null ||
                fail "cycle $n: shutdown outcome $(cat "$BODY.1")"
        fi
    fi
    if [ "$n" = 1 ] || [ "$n" = "$CYCLES" ]; then
        [ "$(api PUT vm.delete)" = 204 ] || fail "cycle $n: vm.delete: $(cat "$BODY")"
    fi
    echo "api-leaks: cycle $n took $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }') s"
    case $n in
        1) sleep 1; sample first ;;
        "$CYCLES") sleep 1; sample last ;;
    esac
    n=$((n + 1))
done
kill "$watcher"
echo "api-leaks: $self_stopped of the early guests stopped by themselves before the forced stop, $stuck printed nothing in 60 s"
early_ok() { [ "$banners" -ge $((CYCLES - 4)) ] && [ $((stuck + self_stopped)) -le 2 ]; }
rig_check early-guests-ran "$banners of $((CYCLES - 2)) early kernels printed their command line, $stuck did not, $self_stopped stopped by themselves (at most 2 not normal)" \
    early_ok
rig_expect fds-steady "$first_fds" "$last_fds"
rig_expect threads-steady "$first_threads" "$last_threads"
# 2 MiB: glibc keeps freed heap and the stacks of finished threads (vCPU, VM) cached
# for reuse, so RSS moves by up to a few hundred KiB between cycles; anything a cycle
# leaks for good is far larger over 19 cycles: one guest's RAM (128 MiB, pinned by
# VFIO), a BAR mapping, or even 110 KiB of heap per VM.
rig_check rss-steady "VmRSS ${first_rss} kB after cycle 1, ${last_rss} kB after cycle $CYCLES (at most +2048 kB)" \
    [ "$last_rss" -le $((first_rss + 2048)) ]
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
expect_api vmm-shutdown 204 PUT vmm.shutdown
wait_log "RIG-LEAKS serve-exit" 1 30 || rig_fail "conduit serve did not exit after vmm.shutdown"
rig_expect serve-exit "RIG-LEAKS serve-exit rc=0" "$(grep -m1 'RIG-LEAKS serve-exit' "$LOG")"
