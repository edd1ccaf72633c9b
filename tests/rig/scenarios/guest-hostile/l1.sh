# L1 side of `guest-hostile`: Conduit runs L2 with the nvme and the e1000e; L2 abuses them
# (l2.sh). While L2 holds a state (`RIG-HOSTILE hold NAME`), this script looks at the
# host's side of it: which VFIO interrupts L1 has armed for each device, and Conduit's
# memory around a config-space flood. At the end: Conduit exited 0, its warnings name
# the devices, BARs and addresses, and they came at a limited rate.
OUT=$TMPDIR/conduit.out
: > "$OUT"
( rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --device "$NVME_BDF" --device "$E1000E_BDF" < /dev/null
  echo "RIG-HOSTILE conduit-rc=$RIG_L2_RC" ) 2>&1 | tee "$OUT" &

# host_irqs KIND BDF: how many VFIO interrupts of KIND (msi, msix) L1 has for BDF.
host_irqs() { grep -c "vfio-$1\[[0-9]*\]($2)" /proc/interrupts; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$(pidof conduit)/status" 2>/dev/null; }

on_hold() {
    case $1 in
        msix-bad)
            rig_expect nvme-bad-msix-not-routed 0 "$(host_irqs msix "$NVME_BDF")" ;;
        msi)
            rig_check e1000e-msi-armed "$(host_irqs msi "$E1000E_BDF") MSI vectors armed" \
                [ "$(host_irqs msi "$E1000E_BDF")" -ge 1 ] ;;
        both | both-again)
            rig_check "e1000e-$1-msix-armed" "$(host_irqs msix "$E1000E_BDF") MSI-X vectors armed" \
                [ "$(host_irqs msix "$E1000E_BDF")" -ge 1 ]
            rig_expect "e1000e-$1-no-msi" 0 "$(host_irqs msi "$E1000E_BDF")" ;;
        flood-start) rss_before=$(rss_kb) ;;
        flood-done)
            rss_after=$(rss_kb)
            echo "guest-hostile: conduit VmRSS ${rss_before:-?} kB before the flood, ${rss_after:-?} kB after"
            rig_check flood-rss "VmRSS ${rss_before:-?} -> ${rss_after:-?} kB (at most +256 kB)" \
                [ "${rss_after:-999999}" -le $(( ${rss_before:-0} + 256 )) ] ;;
    esac
}

seen=0 i=0 after_result=0
while ! grep -q "RIG-HOSTILE conduit-rc=" "$OUT"; do
    [ "$i" -ge 2400 ] && rig_fail "conduit did not exit"
    if grep -q "RIG-RESULT l2" "$OUT"; then
        after_result=$((after_result + 1))
        if [ "$after_result" = 150 ]; then
            echo "guest-hostile: conduit still runs 30 s after L2's result; L1 kernel log:"
            echo l > /proc/sysrq-trigger
            for t in /proc/$(pidof conduit)/task/*; do
                echo "task $(cat "$t/comm") $(cat "$t/stat" | cut -d' ' -f3): $(cat "$t/wchan")"
                cat "$t/stack" 2>/dev/null | head -20
            done
            dmesg | tail -n 120
        fi
    fi
    n=$(grep -c "RIG-HOSTILE hold " "$OUT")
    while [ "$seen" -lt "$n" ]; do
        seen=$((seen + 1))
        on_hold "$(grep "RIG-HOSTILE hold " "$OUT" | sed -n "${seen}p" | sed 's/.*RIG-HOSTILE hold //; s/[^a-z-].*//')"
    done
    sleep 0.2
    i=$((i + 1))
done
wait

rig_expect conduit-exit "RIG-HOSTILE conduit-rc=0" "$(grep -o 'RIG-HOSTILE conduit-rc=[0-9]*' "$OUT")"
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'

echo "guest-hostile: Conduit's warnings:"
grep 'conduit: warn' "$OUT" | sort | uniq -c | sort -rn | head -40
warns=$(grep -c 'conduit: warn' "$OUT")
warned() { # NAME DETAIL PATTERN...: a warning line matches every PATTERN
    _name=$1 _detail=$2
    shift 2
    _l=$(grep 'conduit: warn' "$OUT")
    for _p in "$@"; do _l=$(printf '%s\n' "$_l" | grep -e "$_p"); done
    rig_check "$_name" "$_detail" [ -n "$_l" ]
}
warned warn-bar-ram "names the nvme, BAR0, 0x80000 and RAM" "$NVME_BDF" BAR0 0x80000 RAM
warned warn-bar-hole "names the nvme, BAR0, 0xf0000000" "$NVME_BDF" BAR0 0xf0000000 window
warned warn-bar-bar "names the nvme, BAR0 and the e1000e's BAR" "$NVME_BDF" BAR0 "$E1000E_BDF"
warned warn-msix-address "names the nvme and a non-MSI address" "$NVME_BDF" 'MSI-X' 0x12340000
warned warn-msi-msix "names the e1000e, MSI and MSI-X" "$E1000E_BDF" 'MSI-X' 'MSI '
warned warn-suppressed "the rate limit reported what it held back" suppressed
# Unlimited, the guest's abuse gives > 400 MSI-X warnings and > 25 BAR warnings.
rig_check warn-rate "$warns warning lines (at most 120)" [ "$warns" -le 120 ]
