# L1 side (real KVM): each bad input must fail with exit status 1 and an error that names
# what is wrong; nothing may be left running or bound.
K=$L2_KERNEL I=$L2_INITRD
bad() { # NAME WANT_SUBSTRING ARGS...
    name=$1 want=$2; shift 2
    out=$("$CONDUIT" run "$@" 2>&1 </dev/null)
    rc=$?
    echo "bad-input $name: rc=$rc: $out"
    rig_expect "$name-exit" 1 "$rc"
    rig_check "$name-message" "error mentions '$want'" sh -c 'printf "%s" "$1" | grep -qF -- "$2"' _ "$out" "$want"
}
head -c 4096 /dev/urandom > "$TMPDIR/garbage"
truncate -s 700M "$TMPDIR/huge-initrd"
long=$(head -c 3000 /dev/zero | tr '\0' 'x')
bad missing-kernel "/nonexistent/vmlinuz" --kernel /nonexistent/vmlinuz
bad corrupt-kernel "$TMPDIR/garbage" --kernel "$TMPDIR/garbage"
bad missing-initramfs "/nonexistent/initrd" --kernel "$K" --initramfs /nonexistent/initrd
bad initramfs-too-big "huge-initrd" --kernel "$K" --initramfs "$TMPDIR/huge-initrd" --memory 256M
bad memory-too-small "MiB" --kernel "$K" --memory 16M
bad memory-too-large "more than the host can give" --kernel "$K" --memory 64G
bad zero-cpus "cpus" --kernel "$K" --cpus 0
bad too-many-cpus "cpus" --kernel "$K" --cpus 255
bad cmdline-too-long "command line" --kernel "$K" --cmdline "$long"
bad serial-unwritable "/nonexistent/dir/serial.log" --kernel "$K" --serial file=/nonexistent/dir/serial.log
bad no-such-device "0000:00:1f.7" --kernel "$K" --device 0000:00:1f.7
rig_check nothing-left "no conduit process left" sh -c '! pidof conduit >/dev/null'

# SIGTERM while the guest runs: clean teardown, exit 128+15.
"$CONDUIT" run --kernel "$K" --initramfs "$I" --cmdline "$L2_CMDLINE" --memory "$L2_MEM" \
    --serial stdio </dev/null &
pid=$!
sleep 40   # the guest is up and sleeping by then
kill -TERM $pid
wait $pid
rc=$?
rig_expect sigterm-exit 143 "$rc"
rig_check sigterm-gone "conduit exited" sh -c "! kill -0 $pid 2>/dev/null"
