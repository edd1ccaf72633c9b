# L1 side of `api`: `conduit serve` on a socket; everything else through the REST API
# with curl (`conduit ctl` is the same requests). Two VMs with the nvme passed through:
# the second one can take the device only if vm.shutdown released it.
S=$TMPDIR/api.sock
LOG=$TMPDIR/serve.log
BODY=$TMPDIR/body

. "$RIG_SRC/lib/api.sh"
# seccomp_threads: "NAME SECCOMP_MODE FILTERS" for every thread of conduit serve.
seccomp_threads() {
    for _p in /proc/[0-9]*; do
        { tr '\0' ' ' < "$_p/cmdline"; } 2> /dev/null | grep -q "serve --api-socket $S" || continue
        for _t in "$_p"/task/*; do
            echo "$(cat "$_t/comm") $(awk '/^Seccomp:/ {m = $2} /^Seccomp_filters:/ {f = $2}
                END {print m, f}' "$_t/status")"
        done
    done
}
# seccomp_on: every thread in filter mode (2) with one filter, vCPUs with two (vmm and
# vcpu); KVM's own workers (kvm-*) left aside.
seccomp_on() {
    seccomp_threads > "$TMPDIR/seccomp"
    grep -q '^api-worker0 2 1$' "$TMPDIR/seccomp" && grep -q '^vm 2 1$' "$TMPDIR/seccomp" &&
        grep -q '^vcpu0 2 2$' "$TMPDIR/seccomp" &&
        ! grep -v '^kvm-' "$TMPDIR/seccomp" | grep -v '^vcpu[0-9]* 2 2$' | grep -qv ' 2 1$'
}
vm_json() { # vm_json N: the VmConfig of VM number N
    jq -n --arg k "$L2_KERNEL" --arg i "$L2_INITRD" --arg c "$L2_CMDLINE rig.boot=$1" \
        --arg m "$L2_MEM" --arg d "$NVME_BDF" --argjson n "$L2_CPUS" \
        '{kernel: {path: $k, initramfs: $i, cmdline: $c}, cpus: $n, memory: $m,
          serial: "stdio", on_reboot: "exit", devices: [{address: $d}]}' > "$TMPDIR/vm$1.json"
}

command -v curl > /dev/null || rig_fail "no curl on L0"
command -v jq > /dev/null || rig_fail "no jq on L0"
# serve's output (and the guests' consoles, serial stdio) goes to the console and $LOG.
( "$CONDUIT" serve --api-socket "$S" < /dev/null 2>&1; echo "RIG-API serve-exit rc=$?" ) |
    tee "$LOG" &
wait_api
body_is ping '.api == "v1" and (.version | length > 0)'
rig_expect socket-mode 600 "$(stat -c %a "$S")"

# Refusals first: nothing is created by them.
echo '{"kernel": {"path": "/k"}, "gpu": 1}' > "$TMPDIR/bad.json"
expect_api create-unknown-field 400 PUT vm.create "$TMPDIR/bad.json"
body_is create-unknown-field-named '.detail | contains("unknown field `gpu`")'
expect_api boot-before-create 409 PUT vm.boot
expect_api wrong-method 405 GET vm.boot
expect_api unknown-route 404 GET vm.destroy

# boot_vm N: create and boot VM N, wait for its guest, check vm.info, shut it down.
boot_vm() {
    vm_json "$1"
    expect_api "create-$1" 204 PUT vm.create "$TMPDIR/vm$1.json"
    echo "RIG-STAGE l2-start conduit-api vm$1"
    expect_api "boot-$1" 204 PUT vm.boot || return 1
    expect_api "boot-twice-$1" 409 PUT vm.boot
    expect_api "delete-running-$1" 409 PUT vm.delete
    wait_log "RIG-API l2-ready boot=$1" 1 150 || rig_fail "L2 number $1 did not get ready"
    expect_api "info-$1" 200 GET vm.info
    body_is "info-running-$1" '.state == "running" and .vcpus.running == .config.cpus'
    rig_check "info-device-$1" "$(jq -c '.devices' "$BODY")" jq_true --arg d "$NVME_BDF" \
        '.devices | length == 1 and .[0].host_address == $d and (.[0].iommu_group | type) == "number"
         and (.[0].guest_address | startswith("0000:00:")) and (.[0].bars | length) >= 1'
    rig_check "info-vectors-$1" "armed: $(jq -c '.devices[0].msix_vectors_armed' "$BODY")" \
        jq_true '.devices[0].msix_vectors_armed | length >= 2'
    # seccomp is on by default: every thread of the server carries its filter.
    rig_check "seccomp-$1" "$(seccomp_threads | sort | tr '\n' ',')" seccomp_on
    expect_api "shutdown-$1" 200 PUT vm.shutdown "$TMPDIR/shutdown.json"
    body_is "shutdown-graceful-$1" '.outcome.reason == "power-off"'
    expect_api "info-after-$1" 200 GET vm.info
    body_is "info-stopped-$1" '.state == "shutdown" and .devices == [] and .stopped.reason == "power-off"'
    rig_check "no-vfio-irqs-$1" "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
    expect_api "delete-$1" 204 PUT vm.delete
}
echo '{"timeout_secs": 90}' > "$TMPDIR/shutdown.json"
boot_vm 1
# The same device again: only possible if the first VM let go of it.
boot_vm 2

expect_api vmm-shutdown 204 PUT vmm.shutdown
wait_log "RIG-API serve-exit" 1 30 || rig_fail "conduit serve did not exit after vmm.shutdown"
rig_expect serve-exit "RIG-API serve-exit rc=0" "$(grep -m1 'RIG-API serve-exit' "$LOG")"
rig_check socket-removed "$S is gone" [ ! -e "$S" ]
