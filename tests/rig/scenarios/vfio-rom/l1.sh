# L1 side of vfio-rom. L1's edu has an expansion ROM of its own (EDU_ROM, see lib/l1vm.sh);
# bochs-display has none, so it gets one from a file here (rom=FILE). L2 reads both through
# sysfs and compares them with these files (md5 on its command line). rom=off is checked in
# vm.info of a VM running a real-mode payload (no L2 kernel needed), and bad rom= inputs
# must each fail with exit 1 naming the file and the device.
ROM=$TMPDIR/bochs.rom
"$REPO/tests/rig/lib/mkrom" 0x1234 0x1111 6 RIG-BOCHS-FILE-ROM > "$ROM" || rig_fail "cannot make $ROM"
md5() { md5sum < "$1" | cut -d' ' -f1; }
rig_expect rom-file-size 3072 "$(stat -c %s "$ROM")"

# L1 itself sees edu's ROM as the file it was made from (QEMU did not patch it).
rom_of() { # sysfs ROM of device $1 to stdout
    echo 1 > "/sys/bus/pci/devices/$1/rom" && cat "/sys/bus/pci/devices/$1/rom"
    echo 0 > "/sys/bus/pci/devices/$1/rom"
}
rom_of "$EDU_BDF" > "$TMPDIR/edu-l1.rom"
rig_expect l1-edu-rom "$(md5 "$EDU_ROM")" "$(md5 "$TMPDIR/edu-l1.rom")"

K=$L2_KERNEL
bad() { # NAME DEVICE_ARG WANT_SUBSTRING...
    name=$1 dev=$2; shift 2
    out=$("$CONDUIT" run --kernel "$K" --device "$dev" 2>&1 < /dev/null)
    rc=$?
    echo "vfio-rom bad $name: rc=$rc: $out"
    rig_expect "$name-exit" 1 "$rc"
    for want in "$@"; do
        rig_check "$name-message" "error mentions '$want'" \
            sh -c 'printf "%s" "$1" | grep -qF -- "$2"' _ "$out" "$want"
    done
}
: > "$TMPDIR/empty.rom"
truncate -s 17M "$TMPDIR/huge.rom"
bad rom-missing "$BOCHS_BDF,rom=/nonexistent/bochs.rom" /nonexistent/bochs.rom "$BOCHS_BDF" "No such file"
bad rom-empty "$BOCHS_BDF,rom=$TMPDIR/empty.rom" "$TMPDIR/empty.rom" "$BOCHS_BDF" "is empty"
bad rom-huge "$BOCHS_BDF,rom=$TMPDIR/huge.rom" "$TMPDIR/huge.rom" "$BOCHS_BDF" "limit of 16777216 bytes"
bad rom-dir "$BOCHS_BDF,rom=$TMPDIR" "$TMPDIR" "$BOCHS_BDF" "not a regular file"
bad rom-no-path "$BOCHS_BDF,rom=" "rom= needs a file"
bad rom-bad-option "$BOCHS_BDF,romfile=$ROM" "unknown option"
rig_check nothing-left "no conduit process left" sh -c '! pidof conduit > /dev/null'

# rom=off: a VM with a real-mode payload (hlt loop) and the two devices; vm.info lists
# no ROM BAR for edu and the file's 4 KiB ROM BAR for bochs.
S=$TMPDIR/rom.sock
printf '\364\353\375' > "$TMPDIR/hlt.bin"
jq -n --arg p "$TMPDIR/hlt.bin" --arg e "$EDU_BDF" --arg b "$BOCHS_BDF" --arg r "$ROM" \
    '{payload: {path: $p}, serial: "off",
      devices: [{address: $e, rom: "off"}, {address: $b, rom: {file: $r}}]}' > "$TMPDIR/off.json"
"$CONDUIT" run --config "$TMPDIR/off.json" --api-socket "$S" < /dev/null &
pid=$!
i=0
until "$CONDUIT" ctl --api-socket "$S" info > "$TMPDIR/info.json" 2>/dev/null &&
    jq -e '.state == "running"' "$TMPDIR/info.json" > /dev/null; do
    [ "$i" -ge 60 ] && break
    sleep 0.5
    i=$((i + 1))
done
echo "vfio-rom: vm.info bars: $(jq -c '.devices | map({host_address, bars: (.bars | map({index, size}))})' "$TMPDIR/info.json")"
rig_check rom-off "edu with rom=off has no ROM BAR (index 6)" jq -e --arg e "$EDU_BDF" \
    '[.devices[] | select(.host_address == $e) | .bars[] | select(.index == 6)] == []' "$TMPDIR/info.json"
rig_check rom-file-bar "bochs with rom=FILE has a 4 KiB ROM BAR" jq -e --arg b "$BOCHS_BDF" \
    '[.devices[] | select(.host_address == $b) | .bars[] | select(.index == 6) | .size] == [4096]' \
    "$TMPDIR/info.json"
kill -TERM "$pid"
wait "$pid"
rig_expect payload-vm-exit 143 "$?"

# L2: edu with its own ROM, bochs with the file's.
rig_run_l2 "$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" \
    --cmdline "$L2_CMDLINE rig.edu_md5=$(md5 "$EDU_ROM") rig.bochs_md5=$(md5 "$ROM")" \
    --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio \
    --device "$EDU_BDF" --device "$BOCHS_BDF,rom=$ROM"
rig_expect conduit-exit 0 "$RIG_L2_RC"
rig_check no-vfio-irqs "no vfio interrupts left in L1" sh -c '! grep -q vfio /proc/interrupts'
