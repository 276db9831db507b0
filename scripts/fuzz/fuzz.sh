#!/usr/bin/env bash
# Coverage-guided fuzzing of everything a viewer or a record can reach (see Harness.swift),
# with libFuzzer and AddressSanitizer from the Swift toolchain.
#   scripts/fuzz/fuzz.sh [SECONDS] [JOBS]     (default: 600 seconds, 1 job)
# Builds the harness in .tools/fuzz (links to Sources/, so it fuzzes the working tree), seeds
# it from the samples and the CMCD test vectors, keeps the corpus it grows in .tools/fuzz/corpus
# for the next run, and exits non-zero if any input crashed, hung or allocated without bound
# (the inputs are left in .tools/fuzz/artifacts).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-600}
jobs=${2:-1}
work=.tools/fuzz
here=scripts/fuzz
repo=$(pwd)

mkdir -p "$work/Sources/Fuzz" "$work/Sources/SentinelInflux" "$work/corpus" "$work/artifacts"
# The project's modules the template names as targets, each linked whole; of SentinelInflux only
# the line-protocol writer (the rest needs the HTTP client).
modules=$(sed -n 's/^ *\.target(name: "\([A-Za-z]*\)".*/\1/p' "$here/Package.swift.template" | grep -vx SentinelInflux)
[ -n "$modules" ] || { echo "fuzz.sh: no targets found in $here/Package.swift.template" >&2; exit 1; }
for module in $modules; do
    ln -sfn "$repo/Sources/$module" "$work/Sources/$module"
done
ln -sfn "$repo/Sources/SentinelInflux/LineProtocol.swift" "$work/Sources/SentinelInflux/LineProtocol.swift"
cp "$here/Package.swift.template" "$work/Package.swift"
cp "$here/Harness.swift" "$work/Sources/Fuzz/main.swift"

swiftc=$(command -v swiftc)
toolchain=$(dirname "$(readlink -f "$swiftc")")/..
library=$(ls "$toolchain"/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-"$(uname -m)".a 2>/dev/null | head -1)
[ -n "$library" ] || { echo "fuzz.sh: libFuzzer (libclang_rt.fuzzer_no_main) not found in the Swift toolchain" >&2; exit 1; }
(cd "$work" && SENTINEL_FUZZER_LIB="$library" swift build -c release --product Fuzz >&2)

seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
python3 "$here/seeds.py" "$seeds" >/dev/null
rm -f "$work"/artifacts/*
parallel=()
[ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
# -timeout: an input taking 5 s is a hang; -malloc_limit_mb: no single allocation of 512 MiB.
status=0
(cd "$work" && ASAN_OPTIONS=detect_leaks=0 .build/release/Fuzz corpus "$seeds" \
    -max_len=4096 -timeout=5 -rss_limit_mb=4096 -malloc_limit_mb=512 -max_total_time="$seconds" \
    "${parallel[@]}" -artifact_prefix=artifacts/ -print_final_stats=1) || status=$?
if ls "$work"/artifacts/* >/dev/null 2>&1; then
    echo "fuzz.sh: inputs that failed are in $work/artifacts:" >&2
    ls "$work"/artifacts >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: the fuzzer stopped with status $status and left no failing input" >&2
    exit "$status"
fi
echo "fuzz.sh: no input crashed, hung or allocated without bound" >&2
