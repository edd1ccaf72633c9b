# L1 side of vfio-p2p: two L2 boots with edu and ivshmem (64 GiB BAR2) passed through.
# Boot 1: ivshmem with p2p=on, and conduit's API on a socket, so vm.info is checked while
# L2 runs. Boot 2: the same without p2p (the negative control). l2.sh makes edu DMA a
# pattern from L2's RAM to BAR2 + an offset per boot; post.sh looks for both on L0.
S=$TMPDIR/p2p.sock
INFO=$TMPDIR/info.json

# info_p2p: the running VM's vm.info in $INFO (waits for "running").
info_p2p() {
    i=0
    while [ "$i" -lt 120 ]; do
        if "$CONDUIT" ctl --api-socket "$S" --wait 10 info > "$INFO" 2>/dev/null &&
            jq -e '.state == "running"' "$INFO" > /dev/null; then
            return 0
        fi
        sleep 1
        i=$((i + 1))
    done
    return 1
}
jq_true() { jq -e "$@" "$INFO" > /dev/null; }

command -v jq > /dev/null || rig_fail "no jq on L0"
# since T0: seconds since L1 uptime T0.
since() { awk -v t0="$1" '{ printf "%.1f", $1 - t0 }' /proc/uptime; }
t0=$(cut -d' ' -f1 /proc/uptime)
( export CONDUIT_LOG=info; rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE rig.p2p=on rig.offset=0x1000" --cpus "$L2_CPUS" --memory "$L2_MEM" \
    --serial stdio --api-socket "$S" --device "$EDU_BDF" --device "$IVSHMEM_BDF,p2p=on"
  echo "$RIG_L2_RC" > "$TMPDIR/rc1" ) &
l2=$!
if info_p2p; then
    echo "vfio-p2p: vm.info devices: $(jq -c '.devices | map({host_address, p2p, p2p_dma, bars})' "$INFO")"
    echo "vfio-p2p: VM built in $(jq .boot.build_ms "$INFO") ms (with the 64 GiB BAR DMA-mapped)"
    rig_check info-p2p "ivshmem reports p2p and BAR2's whole 64 GiB mapped at its guest address" \
        jq_true --arg d "$IVSHMEM_BDF" '.devices[] | select(.host_address == $d) |
            .p2p == true and (.p2p_dma | length) == 1 and .p2p_dma[0].bar == 2
            and .p2p_dma[0].size == 68719476736
            and .p2p_dma[0].iova == (.bars[] | select(.index == 2) | .guest_address)'
    rig_check info-no-p2p "edu reports no p2p and no ranges" \
        jq_true --arg d "$EDU_BDF" '.devices[] | select(.host_address == $d) |
            .p2p == false and .p2p_dma == []'
    rig_check info-config "the config echoes p2p" \
        jq_true '.config.devices | map(.p2p) == [false, true]'
else
    rig_check info-p2p "vm.info answered while L2 ran" false
fi
wait "$l2"
rig_expect conduit-exit-p2p 0 "$(cat "$TMPDIR/rc1")"
echo "vfio-p2p: boot with p2p=on took $(since "$t0") s"

dmesg -c > /dev/null 2>&1
t0=$(cut -d' ' -f1 /proc/uptime)
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE rig.p2p=off rig.offset=0x2000" --cpus "$L2_CPUS" --memory "$L2_MEM" \
    --serial stdio --device "$EDU_BDF" --device "$IVSHMEM_BDF"
rig_expect conduit-exit-no-p2p 0 "$RIG_L2_RC"
echo "vfio-p2p: boot without p2p took $(since "$t0") s"
# L1's IOMMU refused edu's write to the unmapped IOVA.
dmesg | grep -i -e dmar -e fault | tail -n 5
rig_check dmar-fault "L1's VT-d reported a DMA write fault of edu ($EDU_BDF)" \
    sh -c 'dmesg | grep -i "DMAR" | grep -qi -e "00:06.0.*fault\|fault.*00:06.0"'
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
