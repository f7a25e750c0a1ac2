#!/usr/bin/env bash
# Measures what recording costs on a cold `cargo build` of tests/fixtures/ws (a copy, wired to
# the vendored crates like tests/common's fixture_at), or with WORKLOAD=app of scripts/bench's
# workload (a) (bench/workloads/app, ~150 crates, its vendored crates unpacked once):
#   plain     no wrapper
#   wrapper   RUSTC_WRAPPER=kache-record with recording off (the wrapper's own cost)
#   recorded  RUSTC_WRAPPER=kache-record recording every rustc (and what rustc starts)
# Runs are interleaved, RUNS of each (default 5); prints each time, the medians, and the
# records/processes/parse time of the recorded builds.
set -euo pipefail
RUNS=${RUNS:-5}
repo=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release -p kache-recorder --bin kache-record --manifest-path "$repo/Cargo.toml" >/dev/null 2>&1
tool="$repo/target/release/kache-record"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case ${WORKLOAD:-ws} in
  ws) src="$repo/tests/fixtures/ws"; vendor="$repo/tests/fixtures/vendor" ;;
  app)
    src="$repo/bench/workloads/app"
    vendor="${APP_VENDOR:-/tmp/kache-recorder-bench-vendor}"
    if [ ! -d "$vendor" ]; then
      mkdir -p "$vendor"
      tar -C "$vendor" -xJf "$repo/bench/workloads/app-vendor.tar.xz"
    fi
    # the archive holds one top-level directory of crates
    [ -d "$vendor/vendor" ] && vendor="$vendor/vendor"
    ;;
  *) echo "WORKLOAD is ws or app" >&2; exit 2 ;;
esac
cp -r "$src" "$work/ws"
rm -rf "$work/ws/target"
mkdir -p "$work/ws/.cargo"
printf '[source.crates-io]\nreplace-with = "vendored"\n\n[source.vendored]\ndirectory = "%s"\n' \
  "$vendor" > "$work/ws/.cargo/config.toml"
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER \
  RUSTC_WORKSPACE_WRAPPER CARGO_INCREMENTAL CARGO_BUILD_RUSTC_WRAPPER
export KACHE_RECORD_DIR="$work/recorder"

one() { # mode -> "wall user+sys" seconds (CPU time of cargo and every process it waited for)
  local mode=$1
  local out="$work/reports-$mode-$2"
  rm -rf "$work/ws/target" "$out"; mkdir -p "$out"
  local wrap=()
  case $mode in
    wrapper) wrap=(env KACHE_RECORD_OFF=1 KACHE_RECORD_OUT="$out" RUSTC_WRAPPER="$tool") ;;
    recorded) wrap=(env KACHE_RECORD_OUT="$out" RUSTC_WRAPPER="$tool") ;;
  esac
  (cd "$work/ws" && /usr/bin/time -f '%e %U %S' -o "$work/time" "${wrap[@]}" cargo build --offline -q 2>/dev/null)
  awk '{printf "%s %.2f\n", $1, $2 + $3}' "$work/time"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "load before: $(cut -d" " -f1-3 /proc/loadavg)"
one plain warmup >/dev/null   # fill the page cache
declare -A wall cpu
for i in $(seq 1 "$RUNS"); do
  for mode in plain wrapper recorded; do
    read -r w c < <(one $mode "$i")
    wall[$mode]+="$w "
    cpu[$mode]+="$c "
    echo "run $i $mode wall ${w}s cpu ${c}s"
  done
done
for mode in plain wrapper recorded; do
  echo "median $mode wall $(echo ${wall[$mode]} | tr ' ' '\n' | median)s cpu $(echo ${cpu[$mode]} | tr ' ' '\n' | median)s"
done
cat "$work"/reports-recorded-*/*.txt | awk -F'\t' '$1=="summary" {
  split($2,r," "); split($3,p," "); split($5,u," "); n++; rec+=r[1]; proc+=p[1]; us+=u[1];
  if (r[1]>maxr) maxr=r[1]; if (u[1]>maxu) maxu=u[1] }
  END { printf "recorded compiles %d (over all runs): %.0f records and %.1f processes per compile on average, max %d records; parse %.0f us average, max %d us\n", n, rec/n, proc/n, maxr, us/n, maxu }'
grep -h '^lost' "$work"/reports-recorded-*/*.txt | sort | uniq -c || echo "no compile lost anything"
echo "load after: $(cut -d" " -f1-3 /proc/loadavg)"
