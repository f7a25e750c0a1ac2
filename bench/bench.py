#!/usr/bin/env python3
"""The measuring engine behind scripts/bench.

Runs each workload through each cache mode, every mode starting from a fresh
empty cache, and writes report.json (every figure) next to the report that
bench/report.py renders from it. It never invents a figure: a mode that cannot
run on this machine gets a row saying why ("not available: ...").

Tools and paths come from the environment scripts/bench sets up:
KACHE_BIN, KACHE2_BIN, SCCACHE_BIN, CCACHE_BIN, BENCH_WORK, BENCH_REPO.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(os.environ.get("BENCH_REPO", Path(__file__).resolve().parent.parent))
WORK = Path(os.environ.get("BENCH_WORK", "/work/bench-work"))
KACHE = os.environ.get("KACHE_BIN", "kache")
KACHE2 = os.environ.get("KACHE2_BIN", "")
SCCACHE = os.environ.get("SCCACHE_BIN", "sccache")
CCACHE = os.environ.get("CCACHE_BIN", "ccache")
# A port of our own so another engineer's sccache server is never touched.
SCCACHE_PORT = "4391"
KACHE_VERSION = ""

# Variables from the calling shell that would change what a build does.
SCRUB = [
    "CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_INCREMENTAL",
    "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER", "CC", "CXX",
    "CFLAGS", "KACHE_DIR", "SCCACHE_DIR", "CCACHE_DIR", "KACHE_REMOTE", "SCCACHE_BUCKET",
    "MAKEFLAGS", "CARGO_HOME",
]


def log(msg):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def base_env():
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["CARGO_TERM_COLOR"] = "never"
    # A private, empty CARGO_HOME: a user-level ~/.cargo/config.toml (e.g. a global
    # build.rustc-wrapper) must not change what "no cache" means. Builds are offline
    # against vendored sources, so nothing else is needed from it.
    home = WORK / "cargo-home"
    home.mkdir(parents=True, exist_ok=True)
    env["CARGO_HOME"] = str(home)
    return env


def sh(cmd, cwd=None, env=None, check=True, logfile=None):
    """Runs a command; returns its stdout. Output goes to `logfile` when given."""
    out = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if logfile:
        with open(logfile, "a") as fh:
            fh.write(f"$ {' '.join(map(str, cmd))}  (cwd={cwd})\n{out.stdout}\n")
    if check and out.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}")
    return out.stdout


def timed(cmd, cwd, env, logfile):
    """Wall time and user+sys CPU of a command and everything it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    sh(cmd, cwd=cwd, env=env, logfile=logfile)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def du_together(paths):
    """Bytes on disk of all `paths` in one `du`: a block shared by hardlinks is counted once."""
    paths = [str(p) for p in paths if Path(p).exists()]
    if not paths:
        return 0
    out = sh(["du", "-scB1"] + paths)
    return int(out.strip().splitlines()[-1].split()[0])


def rmtree(p):
    p = Path(p)
    if p.is_mount():
        subprocess.run(["umount", "-l", str(p)])
    if p.exists():
        shutil.rmtree(p, ignore_errors=True)
        if p.exists():
            subprocess.run(["rm", "-rf", str(p)])


def unit_dirs(target: Path, profile="debug"):
    """Names of the unit directories cargo keeps fingerprints of in a profile dir."""
    fp = target / profile / ".fingerprint"
    return sorted(p.name for p in fp.iterdir()) if fp.is_dir() else []


def unit_bytes(target: Path, unit: str, profile="debug"):
    """Logical bytes of one unit's files (fingerprint dir, deps/*-hash*, build/unit)."""
    pdir = target / profile
    h = unit.rsplit("-", 1)[-1]
    total = 0
    for d in (pdir / ".fingerprint" / unit, pdir / "build" / unit):
        if d.is_dir():
            total += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    deps = pdir / "deps"
    if deps.is_dir():
        total += sum(f.stat().st_size for f in deps.iterdir()
                     if f.is_file() and (f.name.split(".")[0].endswith("-" + h)))
    return total


# Unit directories an uncached cold build of each workload made: what a build uses.
REFERENCE_UNITS = {}


def unused_seeded(target: Path, slug: str):
    """Units in `target` that the uncached build never made: seeded but unused by cargo
    (cargo itself only creates units it uses)."""
    ref = REFERENCE_UNITS.get(slug)
    if ref is None:
        return None
    extra = [u for u in unit_dirs(target) if u not in ref]
    return {"units": len(extra), "bytes": sum(unit_bytes(target, u) for u in extra)}


# ---------------------------------------------------------------- cache modes

class Mode:
    """One way of building: no cache or one cache tool, with a private store."""

    name = "?"
    label = "?"
    rust = True
    c = True

    def __init__(self, store: Path):
        self.store = store
        self.server = None

    def available(self):
        return None  # or a reason string

    def version(self):
        return ""

    def rust_env(self, env):
        return env

    def cc(self):
        return "cc"

    def c_env(self, env):
        return env

    def before_build(self, env):
        """Called before each measured build (servers are restarted here)."""

    def after_build(self, env):
        """Called after each measured build, inside the CPU accounting."""

    def stats(self, env):
        return None

    def prepare_worktree(self, wt: Path, env):
        """Hook for modes that set up the target dir (kache mount)."""

    def release_worktree(self, wt: Path, env, forget=False):
        pass

    def extra_disk(self):
        return [self.store]


class NoCache(Mode):
    name, label = "nocache", "no cache"

    def version(self):
        return "-"

    def extra_disk(self):
        return []


class Ccache(Mode):
    name, label, rust = "ccache", "ccache", False

    def available(self):
        return None if shutil.which(CCACHE) else "ccache not installed"

    def version(self):
        return sh([CCACHE, "--version"]).splitlines()[0]

    def cc(self):
        return f"{CCACHE} cc"

    def c_env(self, env):
        env = dict(env, CCACHE_DIR=str(self.store), CCACHE_MAXSIZE="20G")
        return env

    def before_build(self, env):
        sh([CCACHE, "--zero-stats"], env=env)

    def stats(self, env):
        out = sh([CCACHE, "--print-stats"], env=env)
        kv = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
        n = lambda k: int(kv.get(k, 0))
        hits = n("direct_cache_hit") + n("preprocessed_cache_hit")
        misses = n("cache_miss")
        calls = n("compile_failed") + n("could_not_use_precompiled_header") + n(
            "called_for_link") + n("unsupported_compiler_option") + n("no_input_file") + n(
            "called_for_preprocessing") + n("multiple_source_files") + n("autoconf_test")
        return {"hits": hits, "misses": misses, "passthroughs": calls}


class Sccache(Mode):
    """sccache, its server restarted (as our own child, so its CPU is counted) per build."""

    name, label = "sccache", "sccache"

    def available(self):
        if not shutil.which(SCCACHE):
            return "sccache not installed"
        return None

    def version(self):
        return sh([SCCACHE, "--version"]).strip()

    def _env(self, env):
        return dict(env, SCCACHE_DIR=str(self.store), SCCACHE_SERVER_PORT=SCCACHE_PORT,
                    SCCACHE_IDLE_TIMEOUT="0", SCCACHE_CACHE_SIZE="50G")

    def rust_env(self, env):
        return dict(self._env(env), RUSTC_WRAPPER=SCCACHE)

    def cc(self):
        return f"{SCCACHE} cc"

    def c_env(self, env):
        return self._env(env)

    def before_build(self, env):
        env = self._env(env)
        subprocess.run([SCCACHE, "--stop-server"], env=env, capture_output=True)
        self.server = subprocess.Popen(
            [SCCACHE], env=dict(env, SCCACHE_START_SERVER="1", SCCACHE_NO_DAEMON="1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(SCCACHE_PORT))) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("sccache server did not start")

    def stats(self, env):
        out = sh([SCCACHE, "--show-stats", "--stats-format=json"], env=self._env(env))
        s = json.loads(out)["stats"]
        total = lambda d: sum(d.get("counts", {}).values()) if isinstance(d, dict) else 0
        hits = total(s.get("cache_hits", {}))
        misses = total(s.get("cache_misses", {}))
        passthroughs = sum(s.get("not_cached", {}).values()) + s.get(
            "requests_not_cacheable", 0) + s.get("requests_unsupported_compiler", 0)
        return {"hits": hits, "misses": misses, "passthroughs": passthroughs,
                "compile_requests": s.get("compile_requests", 0)}

    def after_build(self, env):
        if self.server:
            subprocess.run([SCCACHE, "--stop-server"], env=self._env(env), capture_output=True)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.server = None


class Kache2(Mode):
    """The published kache 2.0 from crates.io, store isolated, no remote."""

    name, label = "kache2", "kache 2.0"
    baseline = None

    def available(self):
        if not KACHE2 or not Path(KACHE2).exists():
            return "kache 2.0 not installed (cargo install kache --version 2.0.0 failed)"
        return None

    def version(self):
        return sh([KACHE2, "--version"], check=False).strip()

    def _env(self, env):
        # Its documented store and runtime (socket, locks, logs) dirs, both private;
        # an empty config file so no user or project config adds a remote.
        cfg = self.store / "config.toml"
        if not cfg.exists():
            self.store.mkdir(parents=True, exist_ok=True)
            cfg.write_text("")
        env = dict(env, KACHE_CACHE_DIR=str(self.store / "cache"),
                   KACHE_RUNTIME_DIR=str(self.store / "run"), KACHE_CONFIG=str(cfg))
        for k in list(env):
            if k.startswith("KACHE_REMOTE") or k.startswith("KACHE_S3"):
                del env[k]
        return env

    def rust_env(self, env):
        return dict(self._env(env), RUSTC_WRAPPER=KACHE2)

    def cc(self):
        return f"{KACHE2} cc"

    def c_env(self, env):
        return self._env(env)

    def before_build(self, env):
        # kache 2.0 serves hits from a daemon; run it in the foreground as our child
        # (like sccache's server) so its CPU is counted, fresh for every build.
        env = self._env(env)
        subprocess.run([KACHE2, "daemon", "stop"], env=env, capture_output=True)
        self.server = subprocess.Popen([KACHE2, "daemon", "run"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = self.store / "run/daemon.sock"
        for _ in range(200):
            if sock.exists():
                out = subprocess.run([KACHE2, "daemon", "status"], env=env,
                                     capture_output=True, text=True)
                if re.search(r"Daemon\s+running", out.stdout):
                    break
            time.sleep(0.05)
        self.baseline = kache2_counters(env)

    def after_build(self, env):
        env = self._env(env)
        subprocess.run([KACHE2, "daemon", "stop"], env=env, capture_output=True)
        if self.server:
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.server = None

    def stats(self, env):
        now = kache2_counters(self._env(env))
        if now is None or self.baseline is None:
            return None
        return {k: now[k] - self.baseline[k] for k in now}


def kache2_counters(env):
    """kache 2.0's counters are cumulative: hits (local, prefetch, remote) and misses."""
    out = subprocess.run([KACHE2, "stats", "--json"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    try:
        s = json.loads(out.stdout)
    except ValueError:
        return None
    hits = sum(int(s.get(k, 0) or 0) for k in ("local_hits", "prefetch_hits", "remote_hits"))
    return {"hits": hits, "misses": int(s.get("misses", 0) or 0)}


class Kache(Mode):
    """Our kache, outputs restored (reflink, hardlink or copy) into each target/."""

    name, label = "kache", "kache (restore)"

    def available(self):
        return None if Path(KACHE).exists() else f"{KACHE} not built"

    def version(self):
        global KACHE_VERSION
        if KACHE_VERSION:
            return KACHE_VERSION
        v = sh([KACHE, "--version"], check=False).strip()
        rev = sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False).strip()
        dirty = " + uncommitted changes" if sh(["git", "-C", str(REPO), "status", "--porcelain"],
                                                check=False).strip() else ""
        KACHE_VERSION = f"{v} (git {rev}{dirty} when the run started)"
        return KACHE_VERSION

    def _env(self, env):
        env = dict(env, KACHE_DIR=str(self.store))
        for k in list(env):
            if k.startswith("KACHE_REMOTE"):
                del env[k]
        return env

    def rust_env(self, env):
        return dict(self._env(env), RUSTC_WRAPPER=KACHE)

    def cc(self):
        return f"{KACHE} cc"

    def c_env(self, env):
        return self._env(env)

    def before_build(self, env):
        sh([KACHE, "stats", "--zero"], env=self._env(env), check=False)

    def stats(self, env):
        out = subprocess.run([KACHE, "stats", "--json"], env=self._env(env),
                             capture_output=True, text=True)
        if out.returncode != 0:
            return None
        s = json.loads(out.stdout)
        r, c = s.get("rust", {}), s.get("cc", {})
        return {"hits": r.get("hits", 0) + c.get("hits", 0),
                "misses": r.get("misses", 0) + c.get("misses", 0),
                "passthroughs": r.get("passthroughs", 0) + c.get("passthroughs", 0),
                "rust": {k: r.get(k) for k in ("hits", "misses", "passthroughs")},
                "cc": {k: c.get(k) for k in ("hits", "misses", "passthroughs")},
                "restore": s.get("restore"),
                "seed": s.get("seed")}


class KacheMount(Kache):
    """Our kache with each worktree's target/ a `kache mount` (FUSE) backed by the store."""

    name, label = "kache-mount", "kache mount"
    c = False

    def available(self):
        base = super().available()
        if base:
            return base
        out = subprocess.run([KACHE, "mount", "--help"], capture_output=True, text=True)
        if out.returncode != 0:
            first = (out.stderr or out.stdout).strip().splitlines()
            return "`kache mount --help` failed: " + (first[0] if first else f"exit {out.returncode}")
        if not Path("/dev/fuse").exists():
            return "no /dev/fuse on this machine"
        return None

    def prepare_worktree(self, wt, env):
        sh([KACHE, "mount", str(wt)], env=self._env(env))

    def release_worktree(self, wt, env, forget=False):
        # target/ is a symlink to the mount (kept in the store), not a mount point itself.
        if wt.exists():
            sh([KACHE, "unmount", "--force"] + (["--forget"] if forget else []) + [str(wt)],
               env=self._env(env))


RUST_MODES = [NoCache, Sccache, Kache2, Kache, KacheMount]
C_MODES = [NoCache, Ccache, Sccache, Kache2, Kache]


# ---------------------------------------------------------------- workloads

def cargo_config(vendor: Path):
    return ("[source.crates-io]\nreplace-with = \"vendored\"\n\n"
            f"[source.vendored]\ndirectory = \"{vendor}\"\n")


class RustWorkload:
    kind = "rust"

    def __init__(self, name, src: Path, vendor: Path, binary: str, args=()):
        self.name, self.src, self.vendor, self.binary, self.args = name, src, vendor, binary, args

    def make_worktree(self, wt: Path):
        rmtree(wt)
        shutil.copytree(self.src, wt, ignore=shutil.ignore_patterns("target", ".cargo"))
        (wt / ".cargo").mkdir(exist_ok=True)
        (wt / ".cargo/config.toml").write_text(cargo_config(self.vendor))

    def build(self, wt):
        return ["cargo", "build", "--offline", "--locked"]

    def clean(self, wt):
        return ["cargo", "clean", "--offline"]

    def target(self, wt):
        return wt / "target"

    def run_binary(self, wt, env):
        exe = wt / "target/debug" / self.binary
        out = subprocess.run([str(exe), *self.args], capture_output=True, text=True, env=env)
        return f"exit={out.returncode}\n{out.stdout}"

    def env_for(self, mode, env):
        return mode.rust_env(env)


class CWorkload:
    kind = "c"

    def __init__(self, name, n_units):
        self.name, self.n = name, n_units

    def make_worktree(self, wt: Path):
        rmtree(wt)
        sh([sys.executable, str(REPO / "bench/gen_cproj.py"), str(wt), str(self.n)])

    def build(self, wt):
        return ["make", "-s", "-j2", f"CC={self.cc}"]

    def clean(self, wt):
        return ["make", "-s", "clean"]

    def target(self, wt):
        return wt / "build"

    def run_binary(self, wt, env):
        out = subprocess.run([str(wt / "build/app")], capture_output=True, text=True)
        return f"exit={out.returncode}\n{out.stdout}"

    def env_for(self, mode, env):
        self.cc = mode.cc()
        env = mode.c_env(env)
        if isinstance(mode, Ccache):
            # ccache's documented settings for hits across checkouts at other paths
            # (with -g, hash_dir would otherwise key on the working directory).
            env["CCACHE_BASEDIR"] = str(WORK)
            env["CCACHE_NOHASHDIR"] = "1"
        return env


# ---------------------------------------------------------------- one mode

def median(xs):
    return statistics.median(xs) if xs else None


NOOP_RUNS = 7


def measure_noop(wl, wt: Path, env):
    """Median wall time of a `cargo build` with nothing to do, right after the cold build:
    what every edit-free rebuild costs (cargo stats every output and reads every fingerprint;
    in a mounted target each is a FUSE call)."""
    walls = []
    sh(wl.build(wt), cwd=wt, env=env)  # warm the caches the same way for every mode
    for _ in range(NOOP_RUNS):
        w0 = time.perf_counter()
        sh(wl.build(wt), cwd=wt, env=env)
        walls.append(time.perf_counter() - w0)
    log(f"  {wl.name}: no-op build {median(walls):.3f}s (median of {NOOP_RUNS})")
    return round(median(walls), 4)


def measure_mode(wl, mode_cls, root: Path, reps: int, reference, full_reps: bool):
    """Cold, warm-in-B, clean+rebuild and five-worktree disk for one mode."""
    mdir = root / wl.slug / mode_cls.name
    rmtree(mdir)
    mdir.mkdir(parents=True)
    store = mdir / "store"
    store.mkdir()
    mode = mode_cls(store)
    res = {"mode": mode.name, "label": mode.label}
    why = mode.available()
    if why:
        res["not_available"] = why
        log(f"  {wl.name}/{mode.name}: not available: {why}")
        return res, reference
    res["version"] = mode.version()
    logfile = mdir / "build.log"
    env = wl.env_for(mode, base_env())
    # Worktrees at unrelated absolute paths (different depth and parent names).
    wts = [mdir / "wt-a", mdir / "elsewhere/deeper/wt-b", mdir / "c/wt-c",
           mdir / "wt-d", mdir / "x/y/z/wt-e"]

    def build(wt, phase, clean_first=False, prepare=False):
        if clean_first:
            try:
                sh(wl.clean(wt), cwd=wt, env=env, logfile=logfile)
            except RuntimeError as e:
                if not isinstance(mode, KacheMount):
                    raise
                # `cargo clean` cannot remove a mount point (EBUSY): say so, then
                # clean it the way that works: unmount, clean, mount again.
                first = [ln for ln in str(e).splitlines() if "error" in ln.lower() or "Caused" in ln]
                res.setdefault("notes", []).append(
                    "`cargo clean` on the mounted target failed (" + " ".join(first[:1]).strip()
                    + "); clean+rebuild measured as `kache unmount` + `cargo clean` + "
                    "`kache mount` + build (unmount with `--forget`, so the mount's kept files go too)")
                mode.release_worktree(wt, env, forget=True)
                sh(wl.clean(wt), cwd=wt, env=env, logfile=logfile)
                mode.prepare_worktree(wt, env)
        prepare_s = None
        # Counters start here (kache: `stats --zero`; servers of other tools start).
        mode.before_build(env)
        if prepare:
            # Mounting (and, for kache mount, seeding) belongs to the worktree's first
            # build: timed on its own and reported next to the build, its counters with it.
            p0 = time.perf_counter()
            mode.prepare_worktree(wt, env)
            prepare_s = round(time.perf_counter() - p0, 3)
        t0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        try:
            built = sh(wl.build(wt), cwd=wt, env=env, logfile=logfile)
            wall = time.perf_counter() - w0
            st = mode.stats(env)
        finally:
            mode.after_build(env)
        t1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (t1.ru_utime - t0.ru_utime) + (t1.ru_stime - t0.ru_stime)
        out = wl.run_binary(wt, env)
        row = {"phase": phase, "worktree": str(wt), "wall_s": round(wall, 3),
               "cpu_s": round(cpu, 3), "stats": st, "output_ok": None}
        if prepare_s is not None:
            row["prepare_s"] = prepare_s
        if wl.kind == "rust":
            # Units cargo did not consider fresh (it prints "Compiling" for each).
            row["units_compiled_by_cargo"] = sum(
                1 for ln in built.splitlines() if ln.strip().startswith("Compiling "))
            if phase == "cold" and mode.name == "nocache":
                REFERENCE_UNITS[wl.slug] = set(unit_dirs(wl.target(wt)))
            if phase == "warm_b":
                row["unused_seeded"] = unused_seeded(wl.target(wt), wl.slug)
        if reference is not None:
            row["output_ok"] = out == reference
        log(f"  {wl.name}/{mode.name} {phase}: {wall:.1f}s wall, {cpu:.1f}s cpu, stats "
            f"{ {k: v for k, v in (st or {}).items() if k in ('hits', 'misses', 'passthroughs')} }"
            f"{'' if row['output_ok'] is not False else ', OUTPUT DIFFERS'}")
        return row, out

    runs = []
    try:
        for wt in wts[:2]:
            wl.make_worktree(wt)
        mode.prepare_worktree(wts[0], env)
        row, out = build(wts[0], "cold")
        if reference is None:
            reference = out
            row["output_ok"] = True
        runs.append(row)
        if wl.kind == "rust":
            res["noop_wall_s"] = measure_noop(wl, wts[0], env)
        # Warm: a worktree at a new absolute path each repetition (the first one is B,
        # kept for the disk figure), so no repetition profits from an earlier build at
        # the same path; the cache already holds A's build.
        n_warm = reps if full_reps else 1
        runs.append(build(wts[1], "warm_b", prepare=True)[0])
        for i in range(1, n_warm):
            wt = mdir / f"elsewhere/rep{i}/wt-b"
            wl.make_worktree(wt)
            try:
                runs.append(build(wt, "warm_b", prepare=True)[0])
            finally:
                mode.release_worktree(wt, env, forget=True)
                rmtree(wt)
        for i in range(n_warm):
            runs.append(build(wts[0], "clean_rebuild_a", clean_first=True)[0])
        # Five worktrees: C, D, E built warm too (for no cache, a plain build each).
        if full_reps or mode.name != "nocache":
            for wt in wts[2:]:
                wl.make_worktree(wt)
                mode.prepare_worktree(wt, env)
                runs.append(build(wt, "extra_worktree")[0])
            five_note = "five worktrees built"
        else:
            # Uncached builds write the same bytes every time; copy A's output to C-E
            # instead of compiling three more times (ext4 has no reflink: real copies).
            for wt in wts[2:]:
                wl.make_worktree(wt)
                sh(["cp", "-a", str(wl.target(wts[0])), str(wl.target(wt))])
            five_note = "A and B built; C-E copies of A's output (same bytes)"
        if isinstance(mode, KacheMount):
            # Through FUSE, du would count the store's blocks once per mount: measure the
            # real disk instead, with every worktree unmounted (what stays in the target
            # dirs plus the store, which holds the mounts' data).
            for wt in wts:
                mode.release_worktree(wt, env)
        one_target = du_together([wl.target(wts[0])])
        targets = [wl.target(w) for w in wts]
        five = du_together(targets + mode.extra_disk())
        res["disk"] = {"one_target_bytes": one_target,
                       "five_worktrees_bytes": five,
                       "five_targets_only_bytes": du_together(targets),
                       "store_bytes": du_together(mode.extra_disk()),
                       "how": "du -scB1 over the five target dirs and the store together "
                              f"(ext4; {five_note})"}
    except Exception as e:  # a mode that breaks is reported, the suite goes on
        res["error"] = str(e)[:3000]
        log(f"  {wl.name}/{mode.name}: ERROR {str(e)[:500]}")
    finally:
        for wt in wts:
            try:
                mode.release_worktree(wt, env, forget=True)
            except RuntimeError as e:
                log(f"  unmount failed: {e}")
        if not os.environ.get("BENCH_KEEP"):
            for wt in wts:  # gigabytes per mode; the log stays
                rmtree(wt)
            rmtree(mdir / "elsewhere"); rmtree(mdir / "c"); rmtree(mdir / "x")
    res["runs"] = runs
    by = lambda p: [r for r in runs if r["phase"] == p]
    res["cold_wall_s"] = median([r["wall_s"] for r in by("cold")])
    res["cold_cpu_s"] = median([r["cpu_s"] for r in by("cold")])
    res["warm_b_wall_s"] = median([r["wall_s"] for r in by("warm_b")])
    # With the mount (and its seeding) made right before: what a new worktree costs.
    res["warm_b_with_prepare_wall_s"] = median(
        [r["wall_s"] + (r.get("prepare_s") or 0) for r in by("warm_b")])
    res["warm_b_cpu_s"] = median([r["cpu_s"] for r in by("warm_b")])
    res["clean_rebuild_wall_s"] = median([r["wall_s"] for r in by("clean_rebuild_a")])
    res["clean_rebuild_cpu_s"] = median([r["cpu_s"] for r in by("clean_rebuild_a")])
    res["warm_reps"] = len(by("warm_b"))
    res["outputs_identical"] = all(r["output_ok"] is not False for r in runs) and bool(runs)
    return res, reference


# ---------------------------------------------------------------- agent day

AGENT_MODES = ("kache-mount", "kache", "kache2")


def git(args, cwd, logfile=None):
    return sh(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"] + args,
              cwd=cwd, logfile=logfile)


def agent_day(wl, mode_cls, root: Path, n: int, reference):
    """An agent's day: `n` worktrees made one after another from one repository and each
    built, from an empty cache. kache mount makes them with `kache worktree add` (mounted
    and seeded); the other modes with `git worktree add` (a plain target/). Total wall
    time (worktree creation included) and total disk: the cache store plus every
    worktree (sources and target/), measured with every mount unmounted."""
    mdir = root / wl.slug / f"agent-day-{mode_cls.name}"
    rmtree(mdir)
    mdir.mkdir(parents=True)
    mode = mode_cls(mdir / "store")
    (mdir / "store").mkdir()
    res = {"mode": mode_cls.name, "label": mode.label, "worktrees": n, "builds": []}
    why = mode.available()
    if why:
        res["not_available"] = why
        return res
    env = wl.env_for(mode, base_env())
    logfile = mdir / "build.log"
    repo = mdir / "repo"
    wts = [mdir / f"agent-{i:02d}" for i in range(1, n + 1)]
    try:
        wl.make_worktree(repo)
        (repo / ".gitignore").write_text("target\n")
        git(["init", "-q", "-b", "main"], repo, logfile)
        git(["add", "-A"], repo, logfile)
        git(["commit", "-q", "-m", "workload"], repo, logfile)
        total = 0.0
        for i, wt in enumerate(wts, 1):
            t0 = time.perf_counter()
            if isinstance(mode, KacheMount):
                sh([KACHE, "worktree", "add", str(wt), f"task-{i}"], cwd=repo,
                   env=mode._env(env), logfile=logfile)
            else:
                git(["worktree", "add", "-q", "-b", f"task-{i}", str(wt)], repo, logfile)
            created = time.perf_counter() - t0
            mode.before_build(env)
            try:
                built = sh(wl.build(wt), cwd=wt, env=env, logfile=logfile)
            finally:
                mode.after_build(env)
            wall = time.perf_counter() - t0
            total += wall
            out = wl.run_binary(wt, env)
            row = {"worktree": wt.name, "create_s": round(created, 3), "wall_s": round(wall, 3),
                   "units_compiled_by_cargo": sum(1 for ln in built.splitlines()
                                                  if ln.strip().startswith("Compiling ")),
                   "output_ok": None if reference is None else out == reference}
            res["builds"].append(row)
            log(f"  agent day {mode.name} {wt.name}: {wall:.1f}s (create {created:.2f}s), "
                f"{row['units_compiled_by_cargo']} units compiled")
        res["total_wall_s"] = round(total, 3)
        if isinstance(mode, KacheMount):
            for wt in wts:
                mode.release_worktree(wt, env)
        res["disk_bytes"] = du_together(wts + mode.extra_disk())
        res["store_bytes"] = du_together(mode.extra_disk())
        res["outputs_identical"] = all(b["output_ok"] is not False for b in res["builds"])
        log(f"  agent day {mode.name}: {total:.1f}s in all, {res['disk_bytes'] / 2**20:.0f} MiB on disk")
    except Exception as e:
        res["error"] = str(e)[:3000]
        log(f"  agent day {mode.name}: ERROR {str(e)[:500]}")
    finally:
        if isinstance(mode, KacheMount):
            for wt in wts:
                try:
                    mode.release_worktree(wt, env, forget=True)
                except RuntimeError:
                    pass
        if not os.environ.get("BENCH_KEEP"):
            rmtree(mdir)
    return res


# ---------------------------------------------------------------- btrfs disk

BTRFS_IMG = WORK / "btrfs.img"
BTRFS_MNT = WORK / "btrfs-mnt"


def btrfs_setup():
    """A fresh loop-mounted btrfs for the disk phase; returns a reason when impossible."""
    try:
        if BTRFS_MNT.is_mount():
            sh(["umount", str(BTRFS_MNT)])
        BTRFS_MNT.mkdir(parents=True, exist_ok=True)
        BTRFS_IMG.unlink(missing_ok=True)
        sh(["truncate", "-s", "60G", str(BTRFS_IMG)])
        sh(["mkfs.btrfs", "-q", "-f", str(BTRFS_IMG)])
        sh(["mount", "-o", "loop", str(BTRFS_IMG), str(BTRFS_MNT)])
    except (RuntimeError, OSError) as e:
        return f"could not loop-mount btrfs: {str(e)[:200]}"
    return None


def btrfs_teardown():
    if BTRFS_MNT.is_mount():
        subprocess.run(["umount", str(BTRFS_MNT)])
    BTRFS_IMG.unlink(missing_ok=True)


def btrfs_used(path):
    """Bytes on disk under `path`, each extent once: exclusive + set-shared."""
    sh(["btrfs", "filesystem", "sync", str(BTRFS_MNT)])
    out = sh(["btrfs", "filesystem", "du", "-s", "--raw", str(path)])
    total, excl, shared = out.strip().splitlines()[-1].split()[:3]
    return int(excl) + int(shared), int(total)


def measure_btrfs(wl, mode_cls):
    """Five worktrees (A cold, B-E warm) and the store on btrfs, where restores may reflink."""
    mdir = BTRFS_MNT / wl.slug / mode_cls.name
    rmtree(mdir)
    mdir.mkdir(parents=True)
    mode = mode_cls(mdir / "store")
    (mdir / "store").mkdir()
    env = wl.env_for(mode, base_env())
    logfile = WORK / f"btrfs-{wl.slug}-{mode.name}.log"
    wts = [mdir / "wt-a", mdir / "elsewhere/deeper/wt-b", mdir / "c/wt-c", mdir / "wt-d",
           mdir / "x/y/z/wt-e"]
    res = {}
    try:
        for i, wt in enumerate(wts):
            wl.make_worktree(wt)
            if mode.name == "nocache" and i:
                # The same bytes again, as real copies (cp would reflink on btrfs).
                sh(["cp", "-a", "--reflink=never", str(wl.target(wts[0])), str(wl.target(wt))])
                continue
            mode.prepare_worktree(wt, env)
            mode.before_build(env)
            try:
                sh(wl.build(wt), cwd=wt, env=env, logfile=logfile)
            finally:
                mode.after_build(env)
        for wt in wts:
            mode.release_worktree(wt, env)
        used, apparent = btrfs_used(mdir)
        one = btrfs_used(wl.target(wts[0]))[0] if wl.target(wts[0]).exists() else 0
        res = {"five_worktrees_bytes": used, "five_worktrees_apparent_bytes": apparent,
               "one_target_bytes": one,
               "how": "btrfs filesystem du -s --raw over the mode's dir (5 worktrees with "
                      "sources, target dirs, store): exclusive + set shared"}
        log(f"  btrfs {wl.slug}/{mode.name}: five worktrees {used / 2**20:.0f} MiB on disk "
            f"({apparent / 2**20:.0f} MiB apparent)")
    except Exception as e:
        res = {"error": str(e)[:1500]}
        log(f"  btrfs {wl.slug}/{mode.name}: ERROR {str(e)[:300]}")
    finally:
        for wt in wts:
            try:
                mode.release_worktree(wt, env, forget=True)
            except RuntimeError:
                pass
        rmtree(mdir)
    return res


# ---------------------------------------------------------------- micro (c)

def hyperfine(cmds, prepare, runs, env, cwd, outjson):
    args = ["hyperfine", "-N", "--style", "none", "--warmup", "2", "--runs", str(runs),
            "--export-json", str(outjson)]
    if prepare:
        args += ["--prepare", prepare]
    sh(args + cmds, cwd=cwd, env=env)
    data = json.loads(Path(outjson).read_text())["results"]
    res = []
    for r in data:
        ts = sorted(r["times"])
        p95 = ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))]
        res.append({"median_ms": round(r["median"] * 1000, 2), "p95_ms": round(p95 * 1000, 2),
                    "mean_ms": round(r["mean"] * 1000, 2), "runs": len(ts)})
    return res


MICRO_C = """#include <stdio.h>
#include <string.h>
#include <stdlib.h>
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int micro(int n) { int v[64]; for (int i = 0; i < 64; i++) v[i] = (i * 7919) % 101;
  qsort(v, 64, sizeof v[0], cmp); char b[32]; snprintf(b, sizeof b, "%d", v[n % 64]);
  return (int)strlen(b); }
"""

MICRO_RS = """//! A small library crate compiled again and again for the per-hit timing.
use std::collections::BTreeMap;
pub fn tally(words: &[&str]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in words { *m.entry(w.to_lowercase()).or_insert(0) += 1; }
    m
}
"""


def micro(root: Path, n: int):
    """Single hits timed one by one: one C object and one rustc crate, per tool."""
    mdir = root / "micro"
    rmtree(mdir)
    mdir.mkdir(parents=True)
    res = {"n": n, "c": [], "rust": []}
    (mdir / "m.c").write_text(MICRO_C)
    env0 = base_env()
    c_tools = [("ccache", Ccache), ("sccache", Sccache), ("kache 2.0", Kache2), ("kache", Kache)]
    for label, cls in c_tools:
        store = mdir / f"store-{cls.name}"
        mode = cls(store)
        why = mode.available()
        if why:
            res["c"].append({"tool": label, "not_available": why})
            continue
        env = mode.c_env(env0)
        cmd = f"{mode.cc()} -O2 -g -c m.c -o m.o"
        try:
            mode.before_build(env)
            sh(cmd.split(), cwd=mdir, env=env)  # the miss that fills the cache
            st0 = mode.stats(env)
            r = hyperfine([cmd], "rm -f m.o", n, env, mdir, mdir / f"c-{cls.name}.json")[0]
            st = mode.stats(env)
            mode.after_build(env)
            res["c"].append(dict(r, tool=label, stats_before=st0, stats_after=st))
        except Exception as e:
            mode.after_build(env)
            res["c"].append({"tool": label, "error": str(e)[-800:]})
    # Plain compile for scale.
    try:
        r = hyperfine(["cc -O2 -g -c m.c -o m.o"], "rm -f m.o", n, env0, mdir, mdir / "c-cc.json")[0]
        res["c"].append(dict(r, tool="no cache (cc)"))
    except Exception as e:
        res["c"].append({"tool": "no cache (cc)", "error": str(e)[-800:]})

    # rustc: a library crate as cargo would compile it (--out-dir, -C metadata, dep-info).
    crate = mdir / "crate"
    (crate / "src").mkdir(parents=True)
    (crate / "src/lib.rs").write_text(MICRO_RS)
    rust_tools = [("no cache (rustc)", NoCache), ("sccache", Sccache), ("kache 2.0", Kache2),
                  ("kache", Kache)]
    for label, cls in rust_tools:
        store = mdir / f"rstore-{cls.name}"
        mode = cls(store)
        why = mode.available()
        if why:
            res["rust"].append({"tool": label, "not_available": why})
            continue
        env = mode.rust_env(env0)
        env.update(CARGO_PKG_NAME="micro", CARGO_CRATE_NAME="micro", CARGO_PKG_VERSION="0.1.0",
                   CARGO_MANIFEST_DIR=str(crate), CARGO="cargo")
        wrapper = env.pop("RUSTC_WRAPPER", None)
        rustc = ["rustc", "--crate-name", "micro", "--edition=2021", "src/lib.rs",
                 "--error-format=json", "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
                 "--crate-type", "lib", "--emit=dep-info,metadata,link", "-C", "embed-bitcode=no",
                 "-C", "debuginfo=2", "-C", "metadata=0123456789abcdef", "-C",
                 "extra-filename=-0123456789abcdef", "--out-dir", str(crate / "out"), "-L",
                 f"dependency={crate / 'out'}"]
        cmd = ([wrapper] if wrapper else []) + rustc
        (crate / "out").mkdir(exist_ok=True)
        try:
            mode.before_build(env)
            sh(cmd, cwd=crate, env=env)
            st0 = mode.stats(env)
            r = hyperfine([" ".join(cmd)], f"find {crate / 'out'} -mindepth 1 -delete",
                          n, env, crate, mdir / f"rs-{cls.name}.json")[0]
            st = mode.stats(env)
            mode.after_build(env)
            res["rust"].append(dict(r, tool=label, stats_before=st0, stats_after=st))
        except Exception as e:
            mode.after_build(env)
            res["rust"].append({"tool": label, "error": str(e)[-800:]})
    return res


# ---------------------------------------------------------------- edit loop (issue 13)

# One edit of a leaf crate (the binary, nothing depends on it) and one of a root crate
# (a library the others depend on) per workload: (file, text replaced, replacement).
# `{n}` makes every edit new, so no edit can be served by an earlier one; each edit
# starts again from the original file, so edits never pile up.
EDITS = {
    "app": {
        "leaf": ("src/main.rs", 'tracing::info!(got, "received");',
                 'tracing::info!(got, edit = {n}u64, "received");'),
        "root": ("crates/model/src/lib.rs", "    let re = regex::Regex::new",
                 "    let _edit = std::hint::black_box({n}u64);\n    let re = regex::Regex::new"),
    },
    "ws": {
        "leaf": ("app/src/main.rs", "let unused_variable = 1;",
                 "let unused_variable = 1; let _edit = std::hint::black_box({n}u64);"),
        "root": ("core/src/lib.rs", 'format!("hello, {name}")',
                 '{ let _edit = std::hint::black_box({n}u64); format!("hello, {name}") }'),
    },
}

# The ways of building an edit loop is measured with: plain cargo (incremental on, the
# dev profile's default), kache with its default policy (`rust.incremental = "keep"`),
# and kache with the policy it had before (`strip`), sharing kache's store.
EDIT_MODES = [("nocache", "no cache (cargo, incremental)", None),
              ("kache", "kache (default: keep)", "keep"),
              ("kache-strip", "kache, rust.incremental = strip", "strip")]


def edit_loop_env(mode, policy):
    env = mode.rust_env(base_env()) if policy else base_env()
    if policy:
        env["KACHE_RUST_INCREMENTAL"] = policy
    return env


def apply_edit(wt: Path, edit, n):
    """Writes edit `edit` number `n` into worktree `wt` (from the original text)."""
    rel, old, new = edit
    original = (wt / (rel + ".orig"))
    if not original.exists():
        shutil.copy2(wt / rel, original)
    text = original.read_text()
    assert old in text, f"edit anchor {old!r} not in {rel}"
    (wt / rel).write_text(text.replace(old, new.replace("{n}", str(n)), 1))


def measure_edit_loop(wl, root: Path, reps: int):
    """An edit-rebuild loop in one worktree: a leaf crate and a root crate of the workspace
    edited `reps` times each, every edit timed as one `cargo build`, for plain cargo and
    kache side by side (the modes take turns, so load on the machine hits them alike).
    Then: a no-op build in each (the loop left nothing stale), and fresh worktrees at the
    original and at the last edited sources, which kache must serve from its store."""
    mdir = root / f"{wl.slug}-edit-loop"
    rmtree(mdir)
    mdir.mkdir(parents=True)
    edits = EDITS["ws" if wl.src.name == "ws" else "app"]
    res = {"workload": wl.name, "reps": reps, "edits": {k: v[0] for k, v in edits.items()},
           "modes": [], "builds": []}
    logfile = mdir / "build.log"
    store = mdir / "store"
    store.mkdir()
    kache = Kache(store)
    why = kache.available()
    if why:
        res["not_available"] = why
        return res
    res["kache_version"] = kache.version()
    modes = []
    for name, label, policy in EDIT_MODES:
        wt = mdir / name / "wt"
        wl.make_worktree(wt)
        modes.append({"mode": name, "label": label, "policy": policy, "wt": wt,
                      "env": edit_loop_env(kache, policy)})

    def build(m, phase, wt=None):
        wt = wt or m["wt"]
        if m["policy"]:
            kache.before_build(m["env"])
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        built = sh(wl.build(wt), cwd=wt, env=m["env"], logfile=logfile)
        wall = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        st = kache.stats(m["env"]) if m["policy"] else None
        row = {"mode": m["mode"], "phase": phase, "wall_s": round(wall, 3),
               "cpu_s": round(cpu, 3), "stats": st,
               "units_compiled_by_cargo": sum(1 for ln in built.splitlines()
                                              if ln.strip().startswith("Compiling ")),
               "output": wl.run_binary(wt, m["env"])}
        res["builds"].append(row)
        log(f"  edit loop {m['mode']} {phase}: {wall:.2f}s (CPU {cpu:.2f}s), cargo compiled "
            f"{row['units_compiled_by_cargo']}, stats "
            f"{ {k: v for k, v in (st or {}).items() if k in ('hits', 'misses', 'passthroughs')} }")
        return row

    try:
        for m in modes:
            build(m, "cold")
            build(m, "noop_before")
        reference = res["builds"][0]["output"]
        n = 0
        same = True
        for i in range(reps):
            for kind, edit in edits.items():
                n += 1
                # Take turns: a different mode goes first each round.
                outputs = set()
                for m in modes[i % len(modes):] + modes[:i % len(modes)]:
                    apply_edit(m["wt"], edit, n)
                    outputs.add(build(m, f"edit_{kind}")["output"])
                same = same and len(outputs) == 1
        res["edit_outputs_identical"] = same
        for m in modes:
            build(m, "noop_after")
        # Fresh worktrees served by the store: at the original sources, and at the
        # sources the loop ended with (the last edit of each kind).
        km = modes[1]
        fresh = mdir / "kache" / "fresh-original"
        wl.make_worktree(fresh)
        res["fresh_original"] = build(km, "fresh_original", fresh)
        fresh_edited = mdir / "kache" / "fresh-edited"
        wl.make_worktree(fresh_edited)
        for kind, edit in edits.items():
            shutil.copy2(km["wt"] / edit[0], fresh_edited / edit[0])
        res["fresh_edited"] = build(km, "fresh_edited", fresh_edited)
        res["outputs_identical"] = all(b["output"] == reference for b in res["builds"]
                                       if b["phase"] in ("cold", "fresh_original"))
    except Exception as e:
        res["error"] = str(e)[:3000]
        log(f"  edit loop: ERROR {str(e)[:500]}")
    finally:
        if not os.environ.get("BENCH_KEEP"):
            for m in modes:
                rmtree(m["wt"].parent)
    for b in res["builds"]:
        b.pop("output", None)
    for m in modes:
        rows = lambda kind, what: [b[what] for b in res["builds"]
                                   if b["mode"] == m["mode"] and b["phase"] == f"edit_{kind}"]
        res["modes"].append({"mode": m["mode"], "label": m["label"], "policy": m["policy"],
                             **{f"{kind}_median_s": median(rows(kind, "wall_s")) for kind in edits},
                             **{f"{kind}_walls_s": rows(kind, "wall_s") for kind in edits},
                             **{f"{kind}_cpu_median_s": median(rows(kind, "cpu_s"))
                                for kind in edits},
                             **{f"{kind}_cpus_s": rows(kind, "cpu_s") for kind in edits}})
    base = res["modes"][0]
    for m in res["modes"][1:]:
        for kind in edits:
            for what, ratio in (("median_s", "vs_nocache"), ("cpu_median_s", "cpu_vs_nocache")):
                a, b = m.get(f"{kind}_{what}"), base.get(f"{kind}_{what}")
                m[f"{kind}_{ratio}"] = round(a / b, 3) if a and b else None
            # Less sensitive to load that drifts during the run: the rebuilds of one
            # round ran back to back, so compare within rounds; and the least
            # disturbed rebuild of each mode.
            pairs = [a / b for a, b in zip(m[f"{kind}_walls_s"], base[f"{kind}_walls_s"]) if b]
            m[f"{kind}_paired_vs_nocache"] = round(median(pairs), 3) if pairs else None
            fa, fb = m[f"{kind}_walls_s"], base[f"{kind}_walls_s"]
            m[f"{kind}_fastest_vs_nocache"] = round(min(fa) / min(fb), 3) if fa and fb else None
    for m in res["modes"]:
        log(f"  edit loop {m['mode']}: " + ", ".join(
            f"{kind} {m.get(f'{kind}_median_s')}s" + (
                f" ({m[f'{kind}_vs_nocache']}x)" if m.get(f"{kind}_vs_nocache") else "")
            + f" CPU {m.get(f'{kind}_cpu_median_s')}s" + (
                f" ({m[f'{kind}_cpu_vs_nocache']}x)" if m.get(f"{kind}_cpu_vs_nocache") else "")
            for kind in edits))
    return res


# ---------------------------------------------------------------- machine

def machine():
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    fs = first(["df", "-T", str(WORK)]).splitlines()[-1].split()[1]
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_bytes": mem, "kernel": platform.release(),
            "filesystem": f"{fs} ({WORK})", "os": first(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
            "rustc": first(["rustc", "--version"]), "cargo": first(["cargo", "--version"]),
            "cc": first(["cc", "--version"]).splitlines()[0] if first(["cc", "--version"]) else "",
            "hyperfine": first(["hyperfine", "--version"])}


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--app-src", help="workload (a) sources")
    ap.add_argument("--app-vendor", help="workload (a) vendored crates")
    ap.add_argument("--vendor-note", default="")
    ap.add_argument("--build-note", default="")
    ap.add_argument("--btrfs", action="store_true",
                    help="also measure five-worktree disk on a loop-mounted btrfs (rust workload)")
    ap.add_argument("--modes", default="", help="comma list to restrict modes")
    ap.add_argument("--no-agent-day", action="store_true",
                    help="skip the agent day (10 worktrees one after another per mode)")
    ap.add_argument("workloads", nargs="*")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    root = WORK / ("quick" if a.quick else "full")
    wanted = a.workloads or ["rust", "c", "micro", "edit"]
    only = set(filter(None, a.modes.split(",")))
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "quick": a.quick, "reps": a.reps, "machine": machine(),
              "load_before": loadavg(), "workloads": [], "vendor_note": a.vendor_note,
              "build_note": a.build_note,
              "load_samples": []}
    log(f"machine: {report['machine']['cores']} cores, load {report['load_before']}")

    def save():
        (out / "report.json").write_text(json.dumps(report, indent=1))

    if "rust" in wanted:
        wl = rust_workload(a)
        report["workloads"].append(run_workload(wl, RUST_MODES, root, a, only, report, save))
        save()
    if "c" in wanted:
        wl = CWorkload("c-make (bench/gen_cproj.py, %d units)" % (30 if a.quick else 100),
                       30 if a.quick else 100)
        report["workloads"].append(run_workload(wl, C_MODES, root, a, only, report, save))
    if "micro" in wanted:
        log("micro: single hits")
        report["micro"] = micro(root, 10 if a.quick else 30)
    if "edit" in wanted:
        log("edit loop (issue 13)")
        report["edit_loop"] = measure_edit_loop(rust_workload(a), root, max(a.reps, 5))
        save()
    report["load_after"] = loadavg()
    report["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    save()
    log(f"wrote {out / 'report.json'}")


def rust_workload(a):
    if a.quick:
        wl = RustWorkload("rust-quick (tests/fixtures/ws)", REPO / "tests/fixtures/ws",
                          REPO / "tests/fixtures/vendor", "app")
    else:
        wl = RustWorkload("rust-app (bench/workloads/app)", Path(a.app_src),
                          Path(a.app_vendor), "benchapp")
    wl.slug = re.sub(r"[^a-z0-9]+", "-", wl.name.split(" ")[0].lower())
    return wl


def run_workload(wl, modes, root, a, only, report, save):
    log(f"workload {wl.name}")
    entry = {"name": wl.name, "kind": wl.kind, "modes": []}
    wl.slug = re.sub(r"[^a-z0-9]+", "-", wl.name.split(" ")[0].lower())
    reference = None
    for cls in modes:
        if only and cls.name not in only and cls.name != "nocache":
            continue
        report["load_samples"].append({"at": time.strftime("%H:%M:%S", time.gmtime()),
                                       "mode": f"{wl.kind}/{cls.name}", "load": loadavg()})
        # Uncached builds are all full compiles: measured once (see measure_mode).
        res, reference = measure_mode(wl, cls, root, a.reps, reference,
                                      full_reps=cls.name != "nocache")
        entry["modes"].append(res)
        save()
    if wl.kind == "rust" and not getattr(a, "no_agent_day", False):
        n = 3 if a.quick else 10
        nc = next((m for m in entry["modes"] if m["mode"] == "nocache"), {})
        entry["agent_day"] = {"worktrees": n, "modes": [],
                              "one_plain_target_bytes": (nc.get("disk") or {}).get("one_target_bytes"),
                              "one_plain_cold_wall_s": nc.get("cold_wall_s")}
        log(f"agent day: {n} worktrees per mode")
        for cls in modes:
            if cls.name not in AGENT_MODES or (only and cls.name not in only):
                continue
            entry["agent_day"]["modes"].append(agent_day(wl, cls, root, n, reference))
            save()
    if wl.kind == "rust" and getattr(a, "btrfs", False):
        why = btrfs_setup()
        entry["btrfs"] = why or "measured"
        log(f"btrfs disk phase: {why or 'loop-mounted at ' + str(BTRFS_MNT)}")
        if not why:
            try:
                for res in entry["modes"]:
                    if res.get("not_available") or not res.get("runs"):
                        continue
                    cls = next(c for c in modes if c.name == res["mode"])
                    res["btrfs"] = measure_btrfs(wl, cls)
                    save()
            finally:
                btrfs_teardown()
    return entry


if __name__ == "__main__":
    main()
