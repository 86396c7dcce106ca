#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: FUZZ_SECONDS each
# (default 60). `make fuzz` calls it; run it from anywhere. Exits non-zero
# if a target found a crash (its input is then in fuzz/artifacts/<target>/).
#   fuzz/run.sh                      # all targets
#   fuzz/run.sh virtq_walk           # some of them
#   FUZZ_SECONDS=600 FUZZ_ARGS=-jobs=4 fuzz/run.sh
# Fuzzing needs nightly (sanitizers, coverage instrumentation); the stable
# proptests stay in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
TARGETS=(virtq_walk net_hdr_validate frame_parse config_load control_protocol)
[ $# -gt 0 ] && TARGETS=("$@")

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build --fuzz-dir fuzz

failed=()
for t in "${TARGETS[@]}"; do
    # libFuzzer adds what it finds to its first corpus directory: a
    # scratch one, so that the committed seeds (fuzz/corpus/<t>) stay small.
    work="fuzz/target/corpus/$t"
    mkdir -p "$work"
    echo "== $t: ${FUZZ_SECONDS}s"
    # shellcheck disable=SC2086 # FUZZ_ARGS: extra libFuzzer options, split.
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=30 -print_final_stats=1 ${FUZZ_ARGS:-}; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crash in ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, ${FUZZ_SECONDS}s each, no crash"
