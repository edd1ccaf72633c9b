# Host side of `gpu` (L1 in the rig, the host itself in hardware mode): for every device in
# RIG_BIND (on vfio-pci), what the host sees goes to L2 on its kernel command line: ids,
# class, the six BARs (type and size), the MSI-X table size and BAR0's first 32-bit register
# read through VFIO (`conduit host peek`; NVIDIA's PMC_BOOT_0). Then Conduit passes them all
# through, in that order, and L2 (gpu/l2.sh) compares what it sees.
T=${TMPDIR:-/tmp}
n=0 args= devs=
for bdf in $RIG_BIND; do
    d=/sys/bus/pci/devices/$bdf
    [ -e "$d" ] || rig_fail "no PCI device $bdf on this host"
    id=$(cut -c3- "$d/vendor"):$(cut -c3- "$d/device")
    class=$(cut -c3- "$d/class")
    bars=$(rig_bars "$d" | tr ' ' ,)
    msix=$(rig_msix_vectors "$d/config")
    if ! word=$("$CONDUIT" host peek "$bdf" 2> "$T/peek.err"); then
        cat "$T/peek.err"
        rig_fail "conduit host peek $bdf failed: $(head -n1 "$T/peek.err")"
    fi
    rig_check "host-bar0-word-$n" "$bdf BAR0 + 0 = $word through VFIO" [ "$word" != 0xffffffff ]
    # BAR0's first word is an identification register (compared with L2's) on NVIDIA GPUs
    # (PMC_BOOT_0) and on two stand-ins: the nvme's CAP and ivshmem's interrupt mask.
    case $id in 10de:* | 1b36:0010 | 1af4:1110) same=yes ;; *) same=no ;; esac
    echo "gpu: host device $n: $bdf $id class $class BARs $bars MSI-X vectors $msix BAR0 word $word (driver $(basename "$(readlink "$d/driver")"))"
    args="$args rig.dev$n=$id,$class,$bars,$msix,$word,$same"
    devs="$devs --device $bdf"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || rig_fail "no devices to pass through (RIG_BIND is empty)"
# shellcheck disable=SC2086 # one --device ADDRESS pair per device
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE rig.devs=$n$args" --cpus "$L2_CPUS" --memory "$L2_MEM" \
    --serial stdio $devs
rig_expect conduit-exit 0 "$RIG_L2_RC"
rig_check no-vfio-irqs "no vfio interrupts left on the host" sh -c '! grep -q vfio /proc/interrupts'
