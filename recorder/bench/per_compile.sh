#!/usr/bin/env bash
# Measures the recorder's cost on single compiles, which is less exposed to other work on the
# machine than a whole build: CPU time (user+sys) of rustc and every process it waits for,
# with and without the preload library, RUNS interleaved pairs (default 11), medians.
#   lib   regex-syntax (vendored by bench/workloads/app), a multi-second rustc compile
#   bin   a hello-world bin: mostly the link (cc, collect2, the linker: 4 processes)
set -euo pipefail
RUNS=${RUNS:-11}
repo=$(cd "$(dirname "$0")/../.." && pwd)
vendor="${APP_VENDOR:-/tmp/kache-recorder-bench-vendor}"
if [ ! -d "$vendor/regex-syntax" ]; then
  mkdir -p "$vendor" && tar -C "$vendor" -xJf "$repo/bench/workloads/app-vendor.tar.xz"
fi
cargo build --release -p kache-recorder --bin kache-record --manifest-path "$repo/Cargo.toml" >/dev/null 2>&1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Install the library (and learn its path) by recording a trivial command once.
KACHE_RECORD_DIR="$work/recorder" "$repo/target/release/kache-record" -- true >/dev/null
lib=$(ls "$work"/recorder/*.so)
printf 'fn main() {\n    println!("hello");\n}\n' > "$work/hello.rs"

lib_args=(rustc --edition 2021 --crate-type lib --crate-name regex_syntax
  --cfg 'feature="default"' --cfg 'feature="std"' --cfg 'feature="unicode"')
for f in age bool case gencat perl script segment; do lib_args+=(--cfg "feature=\"unicode-$f\""); done
lib_args+=(-C opt-level=0 -C debuginfo=2 --cap-lints allow --out-dir "$work/out" "$vendor/regex-syntax/src/lib.rs")
bin_args=(rustc --edition 2021 --crate-type bin -C debuginfo=2 --out-dir "$work/out" "$work/hello.rs")

# Runs a command and prints the CPU time (user+sys, microsecond resolution) of it and of every
# process it waited for; the preload variables only reach the command, not this runner.
cpu() {
  python3 -c '
import os, resource, subprocess, sys
env = dict(os.environ)
extra = {}
while sys.argv[1] != "--":
    k, v = sys.argv.pop(1).split("=", 1)
    extra[k] = v
sys.argv.pop(1)
env.update(extra)
subprocess.run(sys.argv[1:], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.4f" % (r.ru_utime + r.ru_stime))' "$@"
}

one() { # what mode -> cpu seconds, and records for recorded runs
  rm -rf "$work/out"; mkdir -p "$work/out"; : > "$work/log"
  local -n args="$1_args"
  if [ "$2" = recorded ]; then
    printf '%s %s\n' "$(cpu LD_PRELOAD="$lib" KACHE_RECORDER_LOG="$work/log" KACHE_RECORDER_ROOT=$$ -- "${args[@]}")" \
      "$(grep -a -c -P '^\d+:[A-Za-z]\d+' "$work/log" || true)"
  else
    cpu -- "${args[@]}"
  fi
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for what in lib bin; do
  one "$what" plain >/dev/null
  p=(); r=(); d=()
  for i in $(seq 1 "$RUNS"); do
    a=$(one "$what" plain); b=$(one "$what" recorded)
    p+=("$a"); r+=("${b%% *}")
    d+=("$(echo "${b%% *} $a" | awk '{printf "%.4f", ($1-$2)/$2*100}')")
    echo "$what run $i plain ${a}s recorded ${b%% *}s (${b##* } records)"
  done
  echo "$what median plain $(printf '%s\n' "${p[@]}" | median)s recorded $(printf '%s\n' "${r[@]}" | median)s; median of per-pair differences $(printf '%s\n' "${d[@]}" | median)%"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
