# L1 side of `faults`. Three conduit runs with the nvme and an API socket, CONDUIT_LOG=info:
#   1. `kill -9` once L2 uses the nvme: the kernel releases the device, the socket stays;
#   2. a new run on the same socket path replaces the stale socket, its L2 uses the nvme
#      again; meanwhile `conduit serve` on that live socket and on a regular file are
#      refused; then SIGTERM: exit 143, the device reset at teardown, the socket removed;
#   3. a normal run (the one the rig counts as its L2 boot) finds the device working.
# An unwritable serial log is an error at start: `bad-input` checks a missing directory
# (serial-unwritable); here a file on a read-only filesystem (L1's root).
export CONDUIT_LOG=info
S=$TMPDIR/faults.sock
NS=$TMPDIR/not-a-socket

command -v curl > /dev/null || rig_fail "no curl on L0"
ping_api() { curl -sS --max-time 10 --unix-socket "$S" -o /dev/null -w '%{http_code}' http://localhost/api/v1/vmm.ping 2>/dev/null; }
# wait_for FILE PATTERN SECONDS
wait_for() { rig_until "$3" grep -q -- "$2" "$1" 2> /dev/null; }
no_vfio_irqs() { ! grep -q vfio /proc/interrupts; }
# wait_no_vfio_irqs SECONDS: the kernel may release the device's interrupts a moment later.
wait_no_vfio_irqs() { rig_until "$1" no_vfio_irqs; }
# start BOOT: conduit in the background, its output on the console and in $TMPDIR/BOOT.out;
# its pid in $TMPDIR/BOOT.pid, its exit status as "RIG-FAULTS rc=N" at the end of the output.
start() {
    : > "$TMPDIR/$1.out"
    ( "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
        --cmdline "$L2_CMDLINE rig.boot=$1" --cpus "$L2_CPUS" --memory "$L2_MEM" \
        --serial stdio --device "$NVME_BDF" --api-socket "$S" < /dev/null &
      echo $! > "$TMPDIR/$1.pid"
      wait $!
      echo "RIG-FAULTS rc=$?" ) 2>&1 | tee "$TMPDIR/$1.out" &
}
rc_of() { grep -o 'RIG-FAULTS rc=[0-9]*' "$TMPDIR/$1.out" | cut -d= -f2; }

# 0. A serial log on a read-only filesystem: refused at start, before any VM exists.
ro=$REPO/faults-serial.log
out=$("$CONDUIT" run --kernel "$L2_KERNEL" --memory "$L2_MEM" --serial "file=$ro" 2>&1 < /dev/null)
rc=$?
echo "faults: serial on a read-only filesystem: rc=$rc: $out"
rig_expect serial-readonly-exit 1 "$rc"
rig_check serial-readonly-message "names $ro" sh -c 'printf "%s" "$1" | grep -qF -- "$2"' _ "$out" "$ro"

# 0b. No CAP_IPC_LOCK and a 1 MiB RLIMIT_MEMLOCK: VFIO could not pin the guest's RAM, so
# the run is refused before the VM starts, saying so and how to fix it; the nvme stays on
# vfio-pci and nothing is left armed.
out=$(capsh --drop=cap_ipc_lock -- -c 'ulimit -l 1024 && exec "$@"' memlock "$CONDUIT" run \
    --kernel "$L2_KERNEL" --memory "$L2_MEM" --device "$NVME_BDF" 2>&1 < /dev/null)
rc=$?
echo "faults: RLIMIT_MEMLOCK 1 MiB without CAP_IPC_LOCK: rc=$rc: $out"
rig_expect memlock-exit 1 "$rc"
rig_check memlock-message "says the guest memory cannot be pinned and why" sh -c \
    'printf "%s" "$1" | grep -qF "conduit: error: cannot pin guest memory for VFIO: RLIMIT_MEMLOCK is 1 MiB, too low to pin $2 of guest memory"' \
    _ "$out" "$(echo "$L2_MEM" | sed 's/M$/ MiB/')"
rig_check memlock-device-kept "$NVME_BDF still on vfio-pci" sh -c \
    '[ "$(basename "$(readlink "/sys/bus/pci/devices/$1/driver")")" = vfio-pci ]' _ "$NVME_BDF"
rig_check memlock-irqs "no vfio interrupts left in L1" no_vfio_irqs

# 0c. The DMA map of guest RAM, which runs on a thread of its own beside the VM's build
# and boot, fails: type1's limit on DMA mappings set to 0 makes VFIO_IOMMU_MAP_DMA fail
# with ENOSPC. The VM (its vCPU started) stops with the error and the limit named, exit 1,
# the device stays on vfio-pci, nothing is left armed.
LIMIT=/sys/module/vfio_iommu_type1/parameters/dma_entry_limit
[ -w "$LIMIT" ] || rig_fail "no writable $LIMIT in L1"
saved_limit=$(cat "$LIMIT")
echo 0 > "$LIMIT"
out=$(timeout 120 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE rig.boot=dma-fail" --memory "$L2_MEM" --device "$NVME_BDF" \
    --serial off 2>&1 < /dev/null)
rc=$?
echo "$saved_limit" > "$LIMIT"
echo "faults: DMA map refused (dma_entry_limit 0): rc=$rc: $out"
rig_expect dma-fail-exit 1 "$rc"
rig_check dma-fail-message "says the DMA map failed and names the limit" sh -c \
    'printf "%s" "$1" | grep -q "conduit: error: cannot DMA-map guest memory into the IOMMU: .*No space left on device.*dma_entry_limit"' _ "$out"
rig_check dma-fail-vcpus "the vCPUs had started before the VM stopped" sh -c \
    'printf "%s" "$1" | grep -qF "started 1 vCPU thread(s)"' _ "$out"
rig_check dma-fail-device-kept "$NVME_BDF still on vfio-pci" sh -c \
    '[ "$(basename "$(readlink "/sys/bus/pci/devices/$1/driver")")" = vfio-pci ]' _ "$NVME_BDF"
rig_check dma-fail-irqs "no vfio interrupts left in L1" wait_no_vfio_irqs 10
rig_check dma-fail-gone "no conduit process left" sh -c '! pidof conduit > /dev/null'
rig_expect dma-limit-restored "$saved_limit" "$(cat "$LIMIT")"

# 1. kill -9 while L2 uses the nvme.
start kill
wait_for "$TMPDIR/kill.out" "RIG-FAULTS l2-up boot=kill" 150 || rig_fail "the first L2 did not come up"
rig_expect api-live-before-kill 200 "$(ping_api)"
kill -KILL "$(cat "$TMPDIR/kill.pid")"
wait_for "$TMPDIR/kill.out" "RIG-FAULTS rc=" 30 || rig_fail "conduit did not die from SIGKILL"
rig_expect kill9-exit 137 "$(rc_of kill)"
rig_check kill9-gone "no conduit process left" sh -c '! pidof conduit > /dev/null'
rig_check kill9-irqs-released "the kernel released the device's interrupts" wait_no_vfio_irqs 10
rig_expect kill9-still-vfio vfio-pci "$(basename "$(readlink "/sys/bus/pci/devices/$NVME_BDF/driver")")"
stale_socket() { [ -S "$S" ] && [ "$(ping_api)" != 200 ]; }
rig_check kill9-stale-socket "$S is left behind, nobody listening" stale_socket

# 2. The same device and socket path again.
start term
wait_for "$TMPDIR/term.out" "RIG-FAULTS l2-up boot=term" 150 || rig_fail "L2 did not come up after the kill -9"
rig_check stale-socket-replaced "conduit said it replaced $S" grep -q "replacing the stale socket $S" "$TMPDIR/term.out"
rig_expect api-after-replace 200 "$(ping_api)"
out=$("$CONDUIT" serve --api-socket "$S" 2>&1 < /dev/null)
rc=$?
echo "faults: serve on the live socket: rc=$rc: $out"
rig_expect live-socket-exit 1 "$rc"
rig_check live-socket-message "says $S is in use" sh -c 'printf "%s" "$1" | grep -qF -- "$2 is in use"' _ "$out" "$S"
rig_expect api-still-served 200 "$(ping_api)"
echo "my notes" > "$NS"
out=$("$CONDUIT" serve --api-socket "$NS" 2>&1 < /dev/null)
rc=$?
echo "faults: serve on a regular file: rc=$rc: $out"
rig_expect not-socket-exit 1 "$rc"
rig_check not-socket-message "names $NS" sh -c 'printf "%s" "$1" | grep -qF -- "$2 exists and is not a socket"' _ "$out" "$NS"
rig_expect not-socket-kept "my notes" "$(cat "$NS")"

kill -TERM "$(cat "$TMPDIR/term.pid")"
wait_for "$TMPDIR/term.out" "RIG-FAULTS rc=" 60 || rig_fail "conduit did not stop on SIGTERM"
rig_expect sigterm-exit 143 "$(rc_of term)"
rig_check sigterm-reset "conduit reset $NVME_BDF at teardown" grep -q "$NVME_BDF: device reset (teardown)" "$TMPDIR/term.out"
rig_check sigterm-socket-removed "$S removed" [ ! -e "$S" ]
rig_check sigterm-irqs-released "no vfio interrupts left in L1" no_vfio_irqs
rig_check sigterm-gone "no conduit process left" sh -c '! pidof conduit > /dev/null'

# 3. After the SIGTERM teardown the device works in a normal run.
{ rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE rig.boot=final" --cpus "$L2_CPUS" --memory "$L2_MEM" \
    --serial stdio --device "$NVME_BDF" < /dev/null
  echo "RIG-FAULTS rc=$RIG_L2_RC"; } 2>&1 | tee "$TMPDIR/final.out"
rig_expect final-exit 0 "$(rc_of final)"
rig_check final-l2-up "L2 used the nvme after the SIGTERM teardown" grep -q "RIG-FAULTS l2-up boot=final" "$TMPDIR/final.out"
rig_check final-reset "reset at attach and at teardown" sh -c "grep -q '$NVME_BDF: device reset (attach)' '$TMPDIR/final.out' && grep -q '$NVME_BDF: device reset (teardown)' '$TMPDIR/final.out'"
