# L1 side (real KVM): every row of the README's bad-input table marked `rig` (the rows
# marked `host` run on any machine in tests/bad_input.rs) must exit with its status and
# print its error exactly (first line); nothing may be left running or bound.
set -f   # the rows' arguments are split on blanks, never globbed
head -c 4096 /dev/urandom > "$TMPDIR/garbage"
truncate -s 700M "$TMPDIR/huge-initrd"
printf '{"kernel":\n' > "$TMPDIR/truncated.json"
printf '{"kernel":{"path":"/x"},"bogus":1}\n' > "$TMPDIR/unknown-field.json"
long=$(head -c 3000 /dev/zero | tr '\0' 'x')

# expand TEXT: the table's placeholders for this L1.
expand() {
    printf '%s' "$1" | sed -e "s|\\\$KERNEL|$L2_KERNEL|g" -e "s|\\\$GARBAGE|$TMPDIR/garbage|g" \
        -e "s|\\\$HUGE|$TMPDIR/huge-initrd|g" -e "s|\\\$LONG|$long|g" \
        -e "s|\\\$NVME|$NVME_BDF|g" -e "s|\\\$TMP|$TMPDIR|g"
}
# code_span CELL: the text of a markdown code span (`x` or `` x ``).
code_span() {
    # (the trim is its own sed: its empty match would satisfy `t`)
    printf '%s' "$1" | sed -e 's/^ *//; s/ *$//' | sed -e 's/^`` \(.*\) ``$/\1/; t' -e 's/^`\(.*\)`$/\1/'
}
# as_regex TEXT: an extended regex matching TEXT exactly, with <n> for a number.
as_regex() {
    printf '^%s$' "$(printf '%s' "$1" | sed -e 's/[][\.*^$(){}+?|/]/\\&/g' -e 's/<n>/[0-9]+/g')"
}

rows=$(sed -n '/<!-- bad-input-table: begin -->/,/<!-- bad-input-table: end -->/p' \
    "$REPO/README.md" | grep '^| [a-z].* | rig |$')
[ -n "$rows" ] || rig_fail "no bad-input table in $REPO/README.md"
count=0
while IFS= read -r line; do
    name=$(printf '%s' "$line" | awk -F ' [|] ' '{sub(/^[|] /, "", $1); print $1}')
    args=$(expand "$(code_span "$(printf '%s' "$line" | awk -F ' [|] ' '{print $2}')")")
    want=$(expand "$(code_span "$(printf '%s' "$line" | awk -F ' [|] ' '{print $3}')")")
    status=$(printf '%s' "$line" | awk -F ' [|] ' '{print $4}')
    # shellcheck disable=SC2086 # the row's arguments, split on blanks on purpose
    out=$("$CONDUIT" $args 2>&1 </dev/null)
    rc=$?
    first=$(printf '%s\n' "$out" | head -n1)
    echo "bad-input $name: rc=$rc: $first"
    rig_expect "$name-exit" "$status" "$rc"
    rig_check "$name-message" "error is exactly: $want" \
        sh -c 'printf "%s\n" "$1" | grep -qEx -- "$2"' _ "$first" "$(as_regex "$want")"
    count=$((count + 1))
done <<ROWS
$rows
ROWS
echo "bad-input: $count rows of README.md checked"
rig_check all-rows "at least 7 rows ran ($count)" [ "$count" -ge 7 ]
rig_check nothing-left "no conduit process left" sh -c '! pidof conduit >/dev/null'
rig_check nvme-unbound "$NVME_BDF still on no driver" sh -c "[ ! -e /sys/bus/pci/devices/$NVME_BDF/driver ]"
rig_check no-vfio-irqs "no vfio interrupts in L1" sh -c '! grep -q vfio /proc/interrupts'
set +f

# SIGTERM while the guest runs: clean teardown, exit 128+15.
"$CONDUIT" run --kernel "$L2_KERNEL" --initramfs "$L2_INITRD" --cmdline "$L2_CMDLINE" \
    --memory "$L2_MEM" --serial stdio </dev/null 2>"$TMPDIR/sigterm.err" &
pid=$!
sleep 40   # the guest is up and sleeping by then
kill -TERM $pid
wait $pid
rc=$?
rig_expect sigterm-exit 143 "$rc"
rig_check sigterm-gone "conduit exited" sh -c "! kill -0 $pid 2>/dev/null"
cat "$TMPDIR/sigterm.err"
# stdin is /dev/null, which epoll refuses: that must cost the guest its input, nothing else.
rig_check sigterm-no-error "no error from conduit with stdin on /dev/null" \
    sh -c '! grep -q "error" "$1"' _ "$TMPDIR/sigterm.err"
