#!/usr/bin/env bash
# Runs the fuzz targets one after the other, each for a bounded time, one libFuzzer process
# (one core) at a time, and prints per target: seconds, executions, crashes.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]    (default: 60 s, every target)
#
# Needs a nightly toolchain, or stable with RUSTC_BOOTSTRAP=1 (used when nightly is missing;
# FUZZ_TOOLCHAIN=stable forces it), and cargo-fuzz (installed from crates.io when missing).
# Inputs: fuzz/seeds/TARGET (committed seeds, only read) and target/fuzz-corpus/TARGET (what
# the fuzzer finds, kept between runs). A crash leaves its input in
# target/fuzz-artifacts/TARGET/ and makes the script exit 1 after the other targets ran.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz_dir="$root/fuzz"
target_dir="$root/target/fuzz" # one build directory per toolchain, below
seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

# Toolchain: nightly when there is one (and not overridden), else stable unlocked.
cargo_cmd=(cargo)
toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
    if command -v rustup >/dev/null && rustup run nightly rustc --version >/dev/null 2>&1; then
        toolchain=nightly
    else
        toolchain=stable
    fi
fi
if [ "$toolchain" = nightly ]; then
    cargo_cmd=(cargo +nightly)
else
    command -v rustup >/dev/null && cargo_cmd=(cargo "+$toolchain")
    export RUSTC_BOOTSTRAP=1
fi
target_dir="$target_dir/$toolchain"
echo "fuzz: toolchain $toolchain ($("${cargo_cmd[@]}" --version))${RUSTC_BOOTSTRAP:+ with RUSTC_BOOTSTRAP=1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --version '^0.13' --locked
fi

cd "$fuzz_dir"
if [ "$#" -eq 0 ]; then
    mapfile -t targets < <("${cargo_cmd[@]}" fuzz list)
else
    targets=("$@")
fi

echo "fuzz: building ${targets[*]} (release, debug assertions, AddressSanitizer)"
"${cargo_cmd[@]}" fuzz build --target-dir "$target_dir" >&2
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$host/release"

failed=()
report=()
for t in "${targets[@]}"; do
    corpus="$root/target/fuzz-corpus/$t"
    artifacts="$root/target/fuzz-artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    seeds=()
    [ -d "$fuzz_dir/seeds/$t" ] && seeds=("$fuzz_dir/seeds/$t")
    log="$root/target/fuzz-$t.log"
    echo "fuzz: $t for ${seconds} s (log $log)"
    start=$(date +%s)
    set +e
    "$bin_dir/$t" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    crashes=$(grep -c 'Test unit written to' "$log" || true)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # died without writing an input (e.g. out of memory in the harness)
    fi
    corpus_size=$(find "$corpus" -type f | wc -l)
    line=$(printf '%-14s %6s s %12s execs %3s crashes %6s corpus' "$t" "$elapsed" "${execs:-?}" "$crashes" "$corpus_size")
    report+=("$line")
    echo "fuzz: $line"
    if [ "$crashes" -ne 0 ]; then
        failed+=("$t")
        grep -E 'panicked at|SUMMARY|Test unit written to' "$log" | head -5 | sed 's/^/    /'
    fi
done

echo
echo "fuzz: summary ($seconds s per target)"
printf '  %s\n' "${report[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: crashes in: ${failed[*]} (inputs in target/fuzz-artifacts/)" >&2
    exit 1
fi
