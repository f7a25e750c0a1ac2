/*
 * kache's input recorder: a preload library (LD_PRELOAD) for glibc on Linux.
 *
 * It interposes the exported libc entry points through which a compiler, its proc-macros and
 * the programs it starts (linker driver, linker, assembler, build tools) look files up and read
 * the environment, and appends one record per event to the log named by KACHE_RECORDER_LOG.
 * The Rust side (src/log.rs) parses the log; the record format is described there.
 *
 * Why C: the hooks must have the exact C ABI of glibc's functions, and several of them are
 * C-variadic (open(const char *, int, ...), openat, execl, execlp, execle). Stable Rust can call
 * variadic functions but cannot define them, so this library is C, compiled by build.rs.
 *
 * Rules every hook follows, and why:
 *  - The real function is called exactly as the program asked, and its result and errno are
 *    what the program gets back: recording must never change behaviour. errno is saved after
 *    the real call and restored after recording.
 *  - Recording uses raw syscalls only (no stdio, no malloc, no hooked libc function), so it is
 *    async-signal-safe, works inside a vfork child, and cannot recurse into our own hooks. A
 *    thread-local guard still stops re-entry, for hooks reached while we resolve real symbols
 *    (dlsym may allocate, and a program's own malloc may call getenv or open).
 *  - One record is one writev(2) on a file opened with O_APPEND: records from many threads and
 *    processes interleave whole, never torn.
 *  - Nothing is held across the real call (no guard, no lock): dlopen runs the constructors of
 *    what it loads, and exec in a vfork child must leave the parent's thread-local state alone.
 *  - Global state is only changed by the process that owns it (pid check): a vfork child shares
 *    our memory but not our file descriptors.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <pthread.h>

#define HOOK __attribute__((visibility("default")))
#define LOG_VAR "KACHE_RECORDER_LOG"
#define ROOT_VAR "KACHE_RECORDER_ROOT"
/* The log descriptor is moved this high so that it does not take a number a program expects
 * to get from its next open (shells and make assume small numbers are theirs). */
#define LOG_FD_FLOOR 900

extern char **environ;

/* ---------- state ---------------------------------------------------------------------- */

static char g_log_path[PATH_MAX];
static size_t g_log_path_len;
static int g_enabled;                 /* a log was named: record */
static volatile int g_log_fd = -1;    /* owned by g_owner */
static volatile pid_t g_owner;
static char g_self[PATH_MAX];         /* this library's path, as the dynamic loader named it */
static size_t g_self_len;
static char g_interp[256];            /* this process's ELF interpreter */
static volatile int g_init_state;     /* 0 not yet, 1 running, 2 done */

static __thread int t_busy __attribute__((tls_model("initial-exec")));

/* ---------- real functions ------------------------------------------------------------- */

struct statx;
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef int (*creat_fn)(const char *, mode_t);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef FILE *(*freopen_fn)(const char *, const char *, FILE *);
typedef int (*stat_fn)(const char *, struct stat *);
typedef int (*stat64_fn)(const char *, struct stat64 *);
typedef int (*fstatat_fn)(int, const char *, struct stat *, int);
typedef int (*fstatat64_fn)(int, const char *, struct stat64 *, int);
typedef int (*xstat_fn)(int, const char *, struct stat *);
typedef int (*fxstatat_fn)(int, int, const char *, struct stat *, int);
typedef int (*statx_fn)(int, const char *, int, unsigned int, struct statx *);
typedef int (*access_fn)(const char *, int);
typedef int (*faccessat_fn)(int, const char *, int, int);
typedef ssize_t (*readlink_fn)(const char *, char *, size_t);
typedef ssize_t (*readlinkat_fn)(int, const char *, char *, size_t);
typedef DIR *(*opendir_fn)(const char *);
typedef DIR *(*fdopendir_fn)(int);
typedef int (*scandir_fn)(const char *, struct dirent ***, int (*)(const struct dirent *),
                          int (*)(const struct dirent **, const struct dirent **));
typedef int (*scandir64_fn)(const char *, struct dirent64 ***, int (*)(const struct dirent64 *),
                            int (*)(const struct dirent64 **, const struct dirent64 **));
typedef int (*scandirat_fn)(int, const char *, struct dirent ***, int (*)(const struct dirent *),
                            int (*)(const struct dirent **, const struct dirent **));
typedef int (*scandirat64_fn)(int, const char *, struct dirent64 ***,
                              int (*)(const struct dirent64 *),
                              int (*)(const struct dirent64 **, const struct dirent64 **));
typedef char *(*realpath_fn)(const char *, char *);
typedef char *(*canon_fn)(const char *);
typedef char *(*getenv_fn)(const char *);
typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*execveat_fn)(int, const char *, char *const[], char *const[], int);
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                        const posix_spawnattr_t *, char *const[], char *const[]);
typedef int (*system_fn)(const char *);
typedef FILE *(*popen_fn)(const char *, const char *);
typedef void *(*dlopen_fn)(const char *, int);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*renameat_fn)(int, const char *, int, const char *);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned int);
typedef int (*unlink_fn)(const char *);
typedef int (*unlinkat_fn)(int, const char *, int);
typedef int (*mkdir_fn)(const char *, mode_t);
typedef int (*mkdirat_fn)(int, const char *, mode_t);
typedef int (*link_fn)(const char *, const char *);
typedef int (*linkat_fn)(int, const char *, int, const char *, int);
typedef int (*symlinkat_fn)(const char *, int, const char *);
typedef int (*mkstemp_fn)(char *);
typedef int (*mkostemp_fn)(char *, int);
typedef int (*mkstemps_fn)(char *, int);
typedef int (*mkostemps_fn)(char *, int, int);
typedef char *(*mkdtemp_fn)(char *);
typedef int (*truncate_fn)(const char *, off_t);
typedef int (*close_fn)(int);
typedef int (*close_range_fn)(unsigned int, unsigned int, int);
typedef void (*closefrom_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);

#define REAL_LIST(X)                                                                              \
    X(open, open_fn) X(open64, open_fn) X(__open_2, open2_fn) X(__open64_2, open2_fn)             \
    X(openat, openat_fn) X(openat64, openat_fn) X(__openat_2, openat2_fn)                         \
    X(__openat64_2, openat2_fn) X(creat, creat_fn) X(creat64, creat_fn) X(fopen, fopen_fn)        \
    X(fopen64, fopen_fn) X(freopen, freopen_fn) X(freopen64, freopen_fn) X(stat, stat_fn)         \
    X(stat64, stat64_fn) X(lstat, stat_fn) X(lstat64, stat64_fn) X(fstatat, fstatat_fn)               \
    X(fstatat64, fstatat64_fn) X(__xstat, xstat_fn) X(__xstat64, xstat_fn) X(__lxstat, xstat_fn)    \
    X(__lxstat64, xstat_fn) X(__fxstatat, fxstatat_fn) X(__fxstatat64, fxstatat_fn)               \
    X(statx, statx_fn) X(access, access_fn) X(euidaccess, access_fn) X(eaccess, access_fn)        \
    X(faccessat, faccessat_fn) X(readlink, readlink_fn) X(readlinkat, readlinkat_fn)              \
    X(opendir, opendir_fn) X(fdopendir, fdopendir_fn) X(scandir, scandir_fn)                      \
    X(scandir64, scandir64_fn) X(scandirat, scandirat_fn) X(scandirat64, scandirat64_fn)          \
    X(realpath, realpath_fn) X(canonicalize_file_name, canon_fn) X(getenv, getenv_fn)             \
    X(secure_getenv, getenv_fn) X(execve, execve_fn) X(execvpe, execve_fn)                        \
    X(fexecve, fexecve_fn) X(execveat, execveat_fn) X(posix_spawn, spawn_fn)                      \
    X(posix_spawnp, spawn_fn) X(system, system_fn) X(popen, popen_fn) X(dlopen, dlopen_fn)        \
    X(rename, rename_fn) X(renameat, renameat_fn) X(renameat2, renameat2_fn)                      \
    X(unlink, unlink_fn) X(unlinkat, unlinkat_fn) X(mkdir, mkdir_fn) X(mkdirat, mkdirat_fn)       \
    X(link, link_fn) X(linkat, linkat_fn) X(symlink, link_fn) X(symlinkat, symlinkat_fn)          \
    X(mkstemp, mkstemp_fn) X(mkstemp64, mkstemp_fn) X(mkostemp, mkostemp_fn)                      \
    X(mkostemp64, mkostemp_fn) X(mkstemps, mkstemps_fn) X(mkstemps64, mkstemps_fn)                \
    X(mkostemps, mkostemps_fn) X(mkostemps64, mkostemps_fn) X(mkdtemp, mkdtemp_fn)                \
    X(truncate, truncate_fn) X(truncate64, truncate_fn) X(close, close_fn)                        \
    X(close_range, close_range_fn) X(closefrom, closefrom_fn) X(dup2, dup2_fn) X(dup3, dup3_fn)

#define DECLARE_REAL(name, type) static type real_##name;
REAL_LIST(DECLARE_REAL)

static void resolve_all(void) {
#define RESOLVE(name, type) real_##name = (type)dlsym(RTLD_NEXT, #name);
    REAL_LIST(RESOLVE)
}

/* ---------- small helpers (no libc calls that could be hooked) ---------------------------- */

static size_t str_len(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static int str_eq_n(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static size_t fmt_u(char *out, unsigned long v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static long raw_getpid(void) { return syscall(SYS_getpid); }

/* The value of NAME in ENV, or NULL. Used where getenv must not be called (ourselves). */
static const char *env_lookup(char *const *env, const char *name) {
    size_t n = str_len(name);
    if (!env) return NULL;
    for (size_t i = 0; env[i]; i++)
        if (str_eq_n(env[i], name, n) && env[i][n] == '=') return env[i] + n + 1;
    return NULL;
}

static char file_type(mode_t m) {
    switch (m & S_IFMT) {
    case S_IFREG: return 'f';
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    case S_IFIFO: return 'p';
    case S_IFSOCK: return 's';
    default: return '?';
    }
}

static char fd_type(int fd) {
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) != 0) return '?';
    return file_type(st.st_mode);
}

/* ---------- the log ------------------------------------------------------------------------ */

static int open_log(void) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, g_log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return -1;
    int high = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, LOG_FD_FLOOR);
    if (high >= 0) {
        syscall(SYS_close, fd);
        fd = high;
    }
    return fd;
}

#define MAX_FIELDS 8

struct rec {
    char kind;
    int n;
    struct iovec iov[2 + 2 * MAX_FIELDS];
    char head[48];
};

static const char NUL_BYTE[1] = {0};
static const char NL_BYTE[1] = {'\n'};

static void rec_init(struct rec *r, char kind) {
    r->kind = kind;
    r->n = 1; /* iov[0] is the header, filled in by rec_emit */
}

static void rec_field(struct rec *r, const char *s, size_t len) {
    if (r->n + 2 > 1 + 2 * MAX_FIELDS) return;
    r->iov[r->n].iov_base = (void *)NUL_BYTE;
    r->iov[r->n].iov_len = 1;
    r->iov[r->n + 1].iov_base = (void *)s;
    r->iov[r->n + 1].iov_len = len;
    r->n += 2;
}

static void rec_str(struct rec *r, const char *s) { rec_field(r, s, s ? str_len(s) : 0); }

static void write_iov(struct iovec *iov, int n, pid_t me) {
    if (me == g_owner) {
        int fd = g_log_fd;
        if (fd < 0) {
            fd = open_log();
            if (fd < 0) {
                /* The session is over (its log deleted): a process that outlived the compile
                 * stops recording instead of retrying on every call. */
                if (errno == ENOENT) g_enabled = 0;
                return;
            }
            /* Two threads may reopen at once: one descriptor is kept, the other closed. */
            if (!__sync_bool_compare_and_swap(&g_log_fd, -1, fd)) {
                syscall(SYS_close, fd);
                fd = g_log_fd;
                if (fd < 0) return;
            }
        }
        syscall(SYS_writev, fd, iov, n);
        return;
    }
    /* A vfork child, or a child of a raw clone: its descriptors may differ from the owner's
     * while its memory does not, so it leaves the shared state alone and opens the log for
     * this one record. */
    int fd = (int)syscall(SYS_openat, AT_FDCWD, g_log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
        syscall(SYS_writev, fd, iov, n);
        syscall(SYS_close, fd);
    }
}

/* Record layout: "<L>:<kind><pid>" then, per field, a NUL byte and the field's bytes, then a
 * newline; L counts every byte after the colon. Fields never hold NUL (they are C strings). */
static void rec_emit(struct rec *r) {
    char *h = r->head;
    size_t body = 0;
    char kp[24];
    size_t kpn = 0;
    pid_t me = (pid_t)raw_getpid();
    kp[kpn++] = r->kind;
    kpn += fmt_u(kp + kpn, (unsigned long)me);
    for (int i = 1; i < r->n; i++) body += r->iov[i].iov_len;
    size_t total = kpn + body + 1;
    size_t hn = fmt_u(h, total);
    h[hn++] = ':';
    for (size_t i = 0; i < kpn; i++) h[hn++] = kp[i];
    r->iov[0].iov_base = h;
    r->iov[0].iov_len = hn;
    r->iov[r->n].iov_base = (void *)NL_BYTE;
    r->iov[r->n].iov_len = 1;
    write_iov(r->iov, r->n + 1, me);
}

/* ---------- initialisation ----------------------------------------------------------------- */

static void find_interp(void) {
    const ElfW(Phdr) *ph = (const ElfW(Phdr) *)getauxval(AT_PHDR);
    unsigned long n = getauxval(AT_PHNUM);
    uintptr_t bias = 0;
    if (!ph) return;
    for (unsigned long i = 0; i < n; i++)
        if (ph[i].p_type == PT_PHDR) bias = (uintptr_t)ph - ph[i].p_vaddr;
    for (unsigned long i = 0; i < n; i++) {
        if (ph[i].p_type != PT_INTERP) continue;
        const char *s = (const char *)(bias + ph[i].p_vaddr);
        size_t len = str_len(s);
        if (len < sizeof g_interp) {
            for (size_t k = 0; k <= len; k++) g_interp[k] = s[k];
        }
    }
}

static void record_start(void);

static void atfork_child(void) { g_owner = (pid_t)raw_getpid(); }

static void init(void) {
    if (g_init_state == 2) return;
    if (!__sync_bool_compare_and_swap(&g_init_state, 0, 1)) return;
    t_busy++;
    resolve_all();
    const char *log = env_lookup(environ, LOG_VAR);
    if (log && log[0] == '/' && str_len(log) < sizeof g_log_path) {
        g_log_path_len = str_len(log);
        for (size_t i = 0; i <= g_log_path_len; i++) g_log_path[i] = log[i];
        Dl_info info;
        if (dladdr((void *)&init, &info) && info.dli_fname && info.dli_fname[0] == '/' &&
            str_len(info.dli_fname) < sizeof g_self) {
            g_self_len = str_len(info.dli_fname);
            for (size_t i = 0; i <= g_self_len; i++) g_self[i] = info.dli_fname[i];
        }
        find_interp();
        g_owner = (pid_t)raw_getpid();
        g_log_fd = open_log();
        pthread_atfork(NULL, NULL, atfork_child);
        g_enabled = 1;
    }
    t_busy--;
    g_init_state = 2;
    if (g_enabled) record_start();
}

__attribute__((constructor)) static void recorder_constructor(void) { init(); }

/* Whether this call should be recorded. Called before the real function, so that a hook
 * reached before our constructor (another library's constructor) still resolves symbols. */
static int active(void) {
    if (g_init_state != 2) init();
    if (!g_enabled) return 0;
    if (t_busy) {
        /* Reached while this thread is inside the recorder: only a signal handler can do that
         * once we are initialised. The call goes unrecorded, so say that something was
         * missed (the record code is async-signal-safe). */
        if (g_init_state == 2) {
            struct rec r;
            rec_init(&r, 'Z');
            rec_emit(&r);
        }
        return 0;
    }
    return 1;
}

/* ---------- path records ------------------------------------------------------------------ */

/* The directory a relative PATH is resolved against (the cwd, or DIRFD), written into BUF;
 * returns its length, 0 for an absolute path, or "?" when it cannot be known. */
static size_t base_of(int dirfd, const char *path, char *buf) {
    if (path[0] == '/') return 0;
    long n;
    if (dirfd == AT_FDCWD) {
        n = syscall(SYS_getcwd, buf, PATH_MAX);
        if (n > 1 && buf[0] == '/') return (size_t)n - 1;
    } else {
        char proc[40] = "/proc/self/fd/";
        size_t p = 14;
        p += fmt_u(proc + p, (unsigned long)dirfd);
        proc[p] = 0;
        n = syscall(SYS_readlinkat, AT_FDCWD, proc, buf, PATH_MAX - 1);
        if (n > 0 && buf[0] == '/') return (size_t)n;
    }
    buf[0] = '?';
    return 1;
}

/* kind, base, path, and optionally one more field. */
static void note_path(char kind, int dirfd, const char *path, const char *extra, size_t extra_len) {
    char base[PATH_MAX];
    struct rec r;
    t_busy++;
    size_t bn = base_of(dirfd, path, base);
    rec_init(&r, kind);
    rec_field(&r, base, bn);
    rec_str(&r, path);
    if (extra) rec_field(&r, extra, extra_len);
    rec_emit(&r);
    t_busy--;
}

static void note_type(char kind, int dirfd, const char *path, char type) {
    note_path(kind, dirfd, path, &type, 1);
}

static void note_errno(int dirfd, const char *path, int err) {
    char num[24];
    size_t n = fmt_u(num, (unsigned long)err);
    note_path('E', dirfd, path, num, n);
}

/* A failed lookup: absent (ENOENT, ENOTDIR) or some other outcome that still depends on what
 * is on disk (EACCES, ELOOP, EEXIST…). */
static void note_failure(int dirfd, const char *path, int err) {
    if (err == ENOENT || err == ENOTDIR)
        note_path('A', dirfd, path, NULL, 0);
    else
        note_errno(dirfd, path, err);
}

/* The path of an open descriptor, for hooks that only get a descriptor. */
static size_t fd_path(int fd, char *buf) {
    char proc[40] = "/proc/self/fd/";
    size_t p = 14;
    p += fmt_u(proc + p, (unsigned long)fd);
    proc[p] = 0;
    long n = syscall(SYS_readlinkat, AT_FDCWD, proc, buf, PATH_MAX - 1);
    if (n <= 0 || buf[0] != '/') {
        buf[0] = '?';
        n = 1;
    }
    buf[n] = 0;
    return (size_t)n;
}

/* ---------- open family ------------------------------------------------------------------ */

static int wants_mode(int flags) {
    return (flags & O_CREAT) || ((flags & O_TMPFILE) == O_TMPFILE);
}

static void after_open(int dirfd, const char *path, int flags, int fd, int err) {
    if (!path) return;
    if (fd < 0) {
        note_failure(dirfd, path, err);
        return;
    }
    if ((flags & O_TMPFILE) == O_TMPFILE) return; /* an unnamed file: nothing looked up */
    if (flags & O_PATH) {
        note_type('F', dirfd, path, fd_type(fd));
        return;
    }
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
        note_path('W', dirfd, path, NULL, 0);
    else
        note_type('R', dirfd, path, fd_type(fd));
}

#define OPEN_HOOK(name)                                                                           \
    HOOK int name(const char *path, int flags, ...) {                                             \
        mode_t mode = 0;                                                                          \
        if (wants_mode(flags)) {                                                                  \
            va_list ap;                                                                           \
            va_start(ap, flags);                                                                  \
            mode = va_arg(ap, mode_t);                                                            \
            va_end(ap);                                                                           \
        }                                                                                         \
        int on = active();                                                                        \
        int fd = real_##name ? real_##name(path, flags, mode)                                     \
                             : (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);             \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_open(AT_FDCWD, path, flags, fd, e);                                             \
            errno = e;                                                                            \
        }                                                                                         \
        return fd;                                                                                \
    }
OPEN_HOOK(open)
OPEN_HOOK(open64)

#define OPENAT_HOOK(name)                                                                         \
    HOOK int name(int dirfd, const char *path, int flags, ...) {                                  \
        mode_t mode = 0;                                                                          \
        if (wants_mode(flags)) {                                                                  \
            va_list ap;                                                                           \
            va_start(ap, flags);                                                                  \
            mode = va_arg(ap, mode_t);                                                            \
            va_end(ap);                                                                           \
        }                                                                                         \
        int on = active();                                                                        \
        int fd = real_##name ? real_##name(dirfd, path, flags, mode)                              \
                             : (int)syscall(SYS_openat, dirfd, path, flags, mode);                \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_open(dirfd, path, flags, fd, e);                                                \
            errno = e;                                                                            \
        }                                                                                         \
        return fd;                                                                                \
    }
OPENAT_HOOK(openat)
OPENAT_HOOK(openat64)

/* _FORTIFY_SOURCE variants: no mode argument. */
#define OPEN2_HOOK(name)                                                                          \
    HOOK int name(const char *path, int flags) {                                                  \
        int on = active();                                                                        \
        int fd = real_##name ? real_##name(path, flags)                                           \
                             : (int)syscall(SYS_openat, AT_FDCWD, path, flags, 0);                \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_open(AT_FDCWD, path, flags, fd, e);                                             \
            errno = e;                                                                            \
        }                                                                                         \
        return fd;                                                                                \
    }
OPEN2_HOOK(__open_2)
OPEN2_HOOK(__open64_2)

#define OPENAT2_HOOK(name)                                                                        \
    HOOK int name(int dirfd, const char *path, int flags) {                                       \
        int on = active();                                                                        \
        int fd = real_##name ? real_##name(dirfd, path, flags)                                    \
                             : (int)syscall(SYS_openat, dirfd, path, flags, 0);                   \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_open(dirfd, path, flags, fd, e);                                                \
            errno = e;                                                                            \
        }                                                                                         \
        return fd;                                                                                \
    }
OPENAT2_HOOK(__openat_2)
OPENAT2_HOOK(__openat64_2)

#define CREAT_HOOK(name)                                                                          \
    HOOK int name(const char *path, mode_t mode) {                                                \
        int on = active();                                                                        \
        int fd = real_##name ? real_##name(path, mode)                                            \
                             : (int)syscall(SYS_openat, AT_FDCWD, path,                           \
                                            O_WRONLY | O_CREAT | O_TRUNC, mode);                  \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_open(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, fd, e);                      \
            errno = e;                                                                            \
        }                                                                                         \
        return fd;                                                                                \
    }
CREAT_HOOK(creat)
CREAT_HOOK(creat64)

static int fopen_flags(const char *mode) {
    if (!mode) return O_RDONLY;
    int plus = 0;
    for (const char *m = mode; *m && *m != ','; m++)
        if (*m == '+') plus = 1;
    if (mode[0] == 'r') return plus ? O_RDWR : O_RDONLY;
    return O_WRONLY | O_CREAT;
}

static void after_fopen(const char *path, const char *mode, FILE *f, int err) {
    if (!path) return;
    after_open(AT_FDCWD, path, fopen_flags(mode), f ? fileno(f) : -1, err);
}

#define FOPEN_HOOK(name)                                                                          \
    HOOK FILE *name(const char *path, const char *mode) {                                         \
        int on = active();                                                                        \
        if (!real_##name) {                                                                       \
            errno = ENOSYS;                                                                       \
            return NULL;                                                                          \
        }                                                                                         \
        FILE *f = real_##name(path, mode);                                                        \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_fopen(path, mode, f, e);                                                        \
            errno = e;                                                                            \
        }                                                                                         \
        return f;                                                                                 \
    }
FOPEN_HOOK(fopen)
FOPEN_HOOK(fopen64)

#define FREOPEN_HOOK(name)                                                                        \
    HOOK FILE *name(const char *path, const char *mode, FILE *stream) {                           \
        int on = active();                                                                        \
        if (!real_##name) {                                                                       \
            errno = ENOSYS;                                                                       \
            return NULL;                                                                          \
        }                                                                                         \
        FILE *f = real_##name(path, mode, stream);                                                \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_fopen(path, mode, f, e);                                                        \
            errno = e;                                                                            \
        }                                                                                         \
        return f;                                                                                 \
    }
FREOPEN_HOOK(freopen)
FREOPEN_HOOK(freopen64)

/* ---------- stat family ------------------------------------------------------------------- */

static void after_stat(int dirfd, const char *path, int flags, int rc, int err, mode_t mode) {
    if (!path) return;
    if (path[0] == 0 && (flags & AT_EMPTY_PATH)) return; /* fstat of a descriptor */
    if (rc == 0)
        note_type('F', dirfd, path, file_type(mode));
    else
        note_failure(dirfd, path, err);
}

#define STAT_HOOK(name, follow, st)                                                               \
    HOOK int name(const char *path, struct st *buf) {                                           \
        int on = active();                                                                        \
        int rc = real_##name ? real_##name(path, buf)                                             \
                             : (int)syscall(SYS_newfstatat, AT_FDCWD, path, buf,                  \
                                            (follow) ? 0 : AT_SYMLINK_NOFOLLOW);                  \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_stat(AT_FDCWD, path, 0, rc, e, rc == 0 ? buf->st_mode : 0);                     \
            errno = e;                                                                            \
        }                                                                                         \
        return rc;                                                                                \
    }
STAT_HOOK(stat, 1, stat)
STAT_HOOK(stat64, 1, stat64)
STAT_HOOK(lstat, 0, stat)
STAT_HOOK(lstat64, 0, stat64)

#define FSTATAT_HOOK(name, st)                                                                    \
    HOOK int name(int dirfd, const char *path, struct st *buf, int flags) {                     \
        int on = active();                                                                        \
        int rc = real_##name ? real_##name(dirfd, path, buf, flags)                               \
                             : (int)syscall(SYS_newfstatat, dirfd, path, buf, flags);             \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_stat(dirfd, path, flags, rc, e, rc == 0 ? buf->st_mode : 0);                    \
            errno = e;                                                                            \
        }                                                                                         \
        return rc;                                                                                \
    }
FSTATAT_HOOK(fstatat, stat)
FSTATAT_HOOK(fstatat64, stat64)

/* The pre-2.33 glibc ABI that binaries built against old glibc (rustc, cargo) still call. */
int __xstat(int, const char *, struct stat *);
int __xstat64(int, const char *, struct stat *);
int __lxstat(int, const char *, struct stat *);
int __lxstat64(int, const char *, struct stat *);
int __fxstatat(int, int, const char *, struct stat *, int);
int __fxstatat64(int, int, const char *, struct stat *, int);

#define XSTAT_HOOK(name)                                                                          \
    HOOK int name(int ver, const char *path, struct stat *buf) {                                  \
        int on = active();                                                                        \
        if (!real_##name) {                                                                       \
            errno = ENOSYS;                                                                       \
            return -1;                                                                            \
        }                                                                                         \
        int rc = real_##name(ver, path, buf);                                                     \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_stat(AT_FDCWD, path, 0, rc, e, rc == 0 ? buf->st_mode : 0);                     \
            errno = e;                                                                            \
        }                                                                                         \
        return rc;                                                                                \
    }
XSTAT_HOOK(__xstat)
XSTAT_HOOK(__xstat64)
XSTAT_HOOK(__lxstat)
XSTAT_HOOK(__lxstat64)

#define FXSTATAT_HOOK(name)                                                                       \
    HOOK int name(int ver, int dirfd, const char *path, struct stat *buf, int flags) {            \
        int on = active();                                                                        \
        if (!real_##name) {                                                                       \
            errno = ENOSYS;                                                                       \
            return -1;                                                                            \
        }                                                                                         \
        int rc = real_##name(ver, dirfd, path, buf, flags);                                       \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_stat(dirfd, path, flags, rc, e, rc == 0 ? buf->st_mode : 0);                    \
            errno = e;                                                                            \
        }                                                                                         \
        return rc;                                                                                \
    }
FXSTATAT_HOOK(__fxstatat)
FXSTATAT_HOOK(__fxstatat64)

HOOK int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    int on = active();
    int rc = real_statx ? real_statx(dirfd, path, flags, mask, buf)
                        : (int)syscall(SYS_statx, dirfd, path, flags, mask, buf);
    if (on) {
        int e = errno;
        mode_t m = 0;
        if (rc == 0 && (buf->stx_mask & STATX_TYPE)) m = buf->stx_mode;
        after_stat(dirfd, path, flags, rc, e, m);
        errno = e;
    }
    return rc;
}

/* ---------- access family ----------------------------------------------------------------- */

static void after_access(int dirfd, const char *path, int rc, int err) {
    if (!path) return;
    if (rc == 0)
        note_type('F', dirfd, path, '?');
    else
        note_failure(dirfd, path, err);
}

#define ACCESS_HOOK(name)                                                                         \
    HOOK int name(const char *path, int how) {                                                    \
        int on = active();                                                                        \
        if (!real_##name) {                                                                       \
            errno = ENOSYS;                                                                       \
            return -1;                                                                            \
        }                                                                                         \
        int rc = real_##name(path, how);                                                          \
        if (on) {                                                                                 \
            int e = errno;                                                                        \
            after_access(AT_FDCWD, path, rc, e);                                                  \
            errno = e;                                                                            \
        }                                                                                         \
        return rc;                                                                                \
    }
ACCESS_HOOK(access)
ACCESS_HOOK(euidaccess)
ACCESS_HOOK(eaccess)

HOOK int faccessat(int dirfd, const char *path, int how, int flags) {
    int on = active();
    if (!real_faccessat) {
        errno = ENOSYS;
        return -1;
    }
    int rc = real_faccessat(dirfd, path, how, flags);
    if (on) {
        int e = errno;
        if (!(path && path[0] == 0 && (flags & AT_EMPTY_PATH))) after_access(dirfd, path, rc, e);
        errno = e;
    }
    return rc;
}

/* ---------- readlink, realpath ------------------------------------------------------------ */

static void after_readlink(int dirfd, const char *path, ssize_t n, const char *buf, int err) {
    if (!path) return;
    if (n >= 0)
        note_path('K', dirfd, path, buf, (size_t)n);
    else if (err == EINVAL)
        note_type('F', dirfd, path, '?'); /* exists, not a symbolic link */
    else
        note_failure(dirfd, path, err);
}

HOOK ssize_t readlink(const char *path, char *buf, size_t size) {
    int on = active();
    if (!real_readlink) {
        errno = ENOSYS;
        return -1;
    }
    ssize_t n = real_readlink(path, buf, size);
    if (on) {
        int e = errno;
        after_readlink(AT_FDCWD, path, n, buf, e);
        errno = e;
    }
    return n;
}

HOOK ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size) {
    int on = active();
    if (!real_readlinkat) {
        errno = ENOSYS;
        return -1;
    }
    ssize_t n = real_readlinkat(dirfd, path, buf, size);
    if (on) {
        int e = errno;
        if (!(path && path[0] == 0)) after_readlink(dirfd, path, n, buf, e);
        errno = e;
    }
    return n;
}

static void after_realpath(const char *path, const char *out, int err) {
    if (!path) return;
    if (out)
        note_path('Q', AT_FDCWD, path, out, str_len(out));
    else
        note_failure(AT_FDCWD, path, err);
}

HOOK char *realpath(const char *path, char *resolved) {
    int on = active();
    if (!real_realpath) {
        errno = ENOSYS;
        return NULL;
    }
    char *out = real_realpath(path, resolved);
    if (on) {
        int e = errno;
        after_realpath(path, out, e);
        errno = e;
    }
    return out;
}

HOOK char *canonicalize_file_name(const char *path) {
    int on = active();
    if (!real_canonicalize_file_name) {
        errno = ENOSYS;
        return NULL;
    }
    char *out = real_canonicalize_file_name(path);
    if (on) {
        int e = errno;
        after_realpath(path, out, e);
        errno = e;
    }
    return out;
}

/* ---------- directory listings ------------------------------------------------------------ */

HOOK DIR *opendir(const char *path) {
    int on = active();
    if (!real_opendir) {
        errno = ENOSYS;
        return NULL;
    }
    DIR *d = real_opendir(path);
    if (on && path) {
        int e = errno;
        if (d)
            note_path('L', AT_FDCWD, path, NULL, 0);
        else
            note_failure(AT_FDCWD, path, e);
        errno = e;
    }
    return d;
}

HOOK DIR *fdopendir(int fd) {
    int on = active();
    if (!real_fdopendir) {
        errno = ENOSYS;
        return NULL;
    }
    DIR *d = real_fdopendir(fd);
    if (on && d) {
        int e = errno;
        char p[PATH_MAX];
        t_busy++;
        fd_path(fd, p);
        t_busy--;
        note_path('L', AT_FDCWD, p, NULL, 0);
        errno = e;
    }
    return d;
}

#define SCANDIR_HOOK(name, ent)                                                                   \
    HOOK int name(const char *path, struct ent ***list, int (*sel)(const struct ent *),           \
                  int (*cmp)(const struct ent **, const struct ent **)) {                         \
        int on = active();                                                                        \
        if (!real_##name) {                                                                       \
            errno = ENOSYS;                                                                       \
            return -1;                                                                            \
        }                                                                                         \
        int n = real_##name(path, list, sel, cmp);                                                \
        if (on && path) {                                                                         \
            int e = errno;                                                                        \
            if (n >= 0)                                                                           \
                note_path('L', AT_FDCWD, path, NULL, 0);                                          \
            else                                                                                  \
                note_failure(AT_FDCWD, path, e);                                                  \
            errno = e;                                                                            \
        }                                                                                         \
        return n;                                                                                 \
    }
SCANDIR_HOOK(scandir, dirent)
SCANDIR_HOOK(scandir64, dirent64)

#define SCANDIRAT_HOOK(name, ent)                                                                 \
    HOOK int name(int dirfd, const char *path, struct ent ***list,                                \
                  int (*sel)(const struct ent *),                                                 \
                  int (*cmp)(const struct ent **, const struct ent **)) {                         \
        int on = active();                                                                        \
        if (!real_##name) {                                                                       \
            errno = ENOSYS;                                                                       \
            return -1;                                                                            \
        }                                                                                         \
        int n = real_##name(dirfd, path, list, sel, cmp);                                         \
        if (on && path) {                                                                         \
            int e = errno;                                                                        \
            if (n >= 0)                                                                           \
                note_path('L', dirfd, path, NULL, 0);                                             \
            else                                                                                  \
                note_failure(dirfd, path, e);                                                     \
            errno = e;                                                                            \
        }                                                                                         \
        return n;                                                                                 \
    }
SCANDIRAT_HOOK(scandirat, dirent)
SCANDIRAT_HOOK(scandirat64, dirent64)

/* ---------- environment ------------------------------------------------------------------- */

static void note_env(const char *name, const char *value) {
    struct rec r;
    t_busy++;
    rec_init(&r, 'V');
    rec_str(&r, name);
    if (value) {
        rec_field(&r, "=", 1);
        rec_str(&r, value);
    } else {
        rec_field(&r, "-", 1);
    }
    rec_emit(&r);
    t_busy--;
}

#define GETENV_HOOK(name)                                                                         \
    HOOK char *name(const char *var) {                                                            \
        int on = active();                                                                        \
        /* Before our symbols are resolved (or while they are), read environ ourselves rather   \
         * than call anything that could allocate or recurse. */                                  \
        char *v = real_##name ? real_##name(var) : (char *)env_lookup(environ, var);              \
        if (on && var) {                                                                          \
            int e = errno;                                                                        \
            note_env(var, v);                                                                     \
            errno = e;                                                                            \
        }                                                                                         \
        return v;                                                                                 \
    }
GETENV_HOOK(getenv)
GETENV_HOOK(secure_getenv)

/* ---------- exec and spawn ---------------------------------------------------------------- */

/* What we can tell about a program before it runs, as one letter in the exec record:
 * 'd' dynamically linked for this loader (the recorder will load in it),
 * 's' statically linked, 'u' set-user/group-ID or file capabilities (the loader ignores
 * LD_PRELOAD), 'f' foreign (another ELF class, machine or loader: it cannot load us),
 * 'g' a Go program (it makes its own syscalls), 'n' not found, '?' unknown. */
static char classify_fd(int fd, int depth);

static char classify_path(int dirfd, const char *path, int depth) {
    int fd = (int)syscall(SYS_openat, dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? 'n' : '?';
    char c = classify_fd(fd, depth);
    syscall(SYS_close, fd);
    return c;
}

#if defined(__x86_64__)
#define NATIVE_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define NATIVE_MACHINE EM_AARCH64
#elif defined(__i386__)
#define NATIVE_MACHINE EM_386
#elif defined(__riscv)
#define NATIVE_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define NATIVE_MACHINE EM_PPC64
#elif defined(__s390x__)
#define NATIVE_MACHINE EM_S390
#else
#define NATIVE_MACHINE 0
#endif

static const char *base_name(const char *p) {
    const char *b = p;
    for (; *p; p++)
        if (*p == '/') b = p + 1;
    return b;
}

static int contains(const char *hay, size_t n, const char *needle) {
    size_t m = str_len(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (str_eq_n(hay + i, needle, m)) return 1;
    return 0;
}

static char classify_fd(int fd, int depth) {
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) != 0 || !S_ISREG(st.st_mode)) return '?';
    if ((st.st_mode & S_ISUID) && st.st_uid != (uid_t)syscall(SYS_geteuid)) return 'u';
    if ((st.st_mode & S_ISGID) && st.st_gid != (gid_t)syscall(SYS_getegid)) return 'u';
    if (syscall(SYS_fgetxattr, fd, "security.capability", NULL, 0) > 0) return 'u';

    ElfW(Ehdr) eh;
    long n = syscall(SYS_pread64, fd, &eh, sizeof eh, 0);
    if (n >= 2 && ((char *)&eh)[0] == '#' && ((char *)&eh)[1] == '!') {
        if (depth > 0) return '?';
        char line[256];
        n = syscall(SYS_pread64, fd, line, sizeof line - 1, 0);
        if (n < 3) return '?';
        line[n] = 0;
        size_t i = 2;
        while (line[i] == ' ' || line[i] == '\t') i++;
        size_t start = i;
        while (line[i] && line[i] != ' ' && line[i] != '\t' && line[i] != '\n') i++;
        if (i == start || i >= (size_t)n) return '?';
        line[i] = 0;
        return classify_path(AT_FDCWD, line + start, depth + 1);
    }
    if (n < (long)sizeof eh || eh.e_ident[EI_MAG0] != ELFMAG0 || eh.e_ident[EI_MAG1] != ELFMAG1 ||
        eh.e_ident[EI_MAG2] != ELFMAG2 || eh.e_ident[EI_MAG3] != ELFMAG3)
        return '?';
    if (eh.e_ident[EI_CLASS] != (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32)) return 'f';
    if (NATIVE_MACHINE && eh.e_machine != NATIVE_MACHINE) return 'f';

    int interp = 0;
    ElfW(Phdr) ph[16];
    for (unsigned i = 0; i < eh.e_phnum; i += 16) {
        unsigned k = eh.e_phnum - i < 16 ? eh.e_phnum - i : 16;
        n = syscall(SYS_pread64, fd, ph, k * sizeof(ElfW(Phdr)),
                    eh.e_phoff + (off_t)i * sizeof(ElfW(Phdr)));
        if (n != (long)(k * sizeof(ElfW(Phdr)))) return '?';
        for (unsigned j = 0; j < k; j++) {
            if (ph[j].p_type != PT_INTERP) continue;
            char name[256];
            size_t len = ph[j].p_filesz < sizeof name ? ph[j].p_filesz : sizeof name - 1;
            n = syscall(SYS_pread64, fd, name, len, ph[j].p_offset);
            if (n <= 0) return '?';
            name[n] = 0;
            interp = 1;
            /* Compared by file name: /lib64/ld-linux-x86-64.so.2 and
             * /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 are the same loader. */
            if (g_interp[0]) {
                const char *a = base_name(name), *b = base_name(g_interp);
                if (str_len(a) != str_len(b) || !str_eq_n(a, b, str_len(b))) return 'f';
            }
        }
    }
    if (!interp) return 's';

    /* A Go program reads files with its own syscalls: nothing it reads would be seen. */
    if (eh.e_shoff && eh.e_shstrndx != SHN_UNDEF && eh.e_shstrndx < eh.e_shnum) {
        ElfW(Shdr) sh;
        n = syscall(SYS_pread64, fd, &sh, sizeof sh,
                    eh.e_shoff + (off_t)eh.e_shstrndx * sizeof(ElfW(Shdr)));
        if (n == (long)sizeof sh) {
            char names[2048];
            size_t len = sh.sh_size < sizeof names ? sh.sh_size : sizeof names;
            n = syscall(SYS_pread64, fd, names, len, sh.sh_offset);
            if (n > 0 && (contains(names, (size_t)n, ".go.buildinfo") ||
                          contains(names, (size_t)n, ".gopclntab")))
                return 'g';
        }
    }
    return 'd';
}

/* What happens to the recorder in the child, as one letter in the exec record:
 * 'k' kept, 'p' put back (the program changed LD_PRELOAD or dropped our log variable and we
 * restored them), 'z' stripped (no LD_PRELOAD at all: the child is not observed), 'o' another
 * recorder's log is named (a nested recording; our record of the child is lost),
 * 'r' removed by us (the child could not load the recorder). */
struct child_env {
    char state;
    char **env; /* what to pass to the real call */
};

static int preload_has_self(const char *v) {
    /* LD_PRELOAD separates entries with spaces or colons. */
    while (*v) {
        while (*v == ' ' || *v == ':') v++;
        const char *s = v;
        while (*v && *v != ' ' && *v != ':') v++;
        if ((size_t)(v - s) == g_self_len && str_eq_n(s, g_self, g_self_len)) return 1;
    }
    return 0;
}

static size_t env_count(char *const *env) {
    size_t n = 0;
    if (env)
        while (env[n]) n++;
    return n;
}

#define PRELOAD_EQ "LD_PRELOAD="
#define LOG_EQ LOG_VAR "="

/* Builds the environment a child gets, into caller-provided storage (the caller's frame, so
 * that it lives until exec, and so that a vfork child never allocates). */
static void prepare_env(char *const *env, char cls, struct child_env *out, char **slots,
                        char *preload_buf, size_t preload_cap, char *log_buf) {
    out->env = (char **)env;
    const char *preload = env_lookup(env, "LD_PRELOAD");
    const char *log = env_lookup(env, LOG_VAR);
    if (log && !(str_len(log) == g_log_path_len && str_eq_n(log, g_log_path, g_log_path_len))) {
        out->state = 'o';
        return;
    }
    if (!g_self_len) {
        /* Our own path is unknown (dladdr failed): nothing can be put back or taken out. */
        out->state = preload && log ? 'k' : 'z';
        return;
    }
    if (cls == 'f') {
        /* The child cannot load us; the loader would print an error or refuse to start it. */
        size_t n = 0;
        if (preload) {
            for (size_t i = 0; i < sizeof PRELOAD_EQ - 1; i++) preload_buf[n++] = PRELOAD_EQ[i];
            const char *v = preload;
            int first = 1;
            while (*v) {
                while (*v == ' ' || *v == ':') v++;
                const char *s = v;
                while (*v && *v != ' ' && *v != ':') v++;
                if (v == s) break;
                if ((size_t)(v - s) == g_self_len && str_eq_n(s, g_self, g_self_len)) continue;
                if (!first) preload_buf[n++] = ':';
                first = 0;
                for (const char *c = s; c < v && n + 2 < preload_cap; c++) preload_buf[n++] = *c;
            }
        }
        preload_buf[n] = 0;
        size_t k = 0;
        for (size_t i = 0; env && env[i]; i++) {
            if (str_eq_n(env[i], PRELOAD_EQ, sizeof PRELOAD_EQ - 1)) {
                if (preload_buf[sizeof PRELOAD_EQ - 1]) slots[k++] = preload_buf;
                continue;
            }
            slots[k++] = env[i];
        }
        slots[k] = NULL;
        out->env = slots;
        out->state = 'r';
        return;
    }
    if (!preload) {
        out->state = 'z';
        return;
    }
    int has_self = preload_has_self(preload);
    if (has_self && log) {
        out->state = 'k';
        return;
    }
    size_t k = 0;
    for (size_t i = 0; env && env[i]; i++) {
        if (!has_self && str_eq_n(env[i], PRELOAD_EQ, sizeof PRELOAD_EQ - 1)) {
            size_t n = 0;
            for (size_t j = 0; j < sizeof PRELOAD_EQ - 1; j++) preload_buf[n++] = PRELOAD_EQ[j];
            for (size_t j = 0; j < g_self_len; j++) preload_buf[n++] = g_self[j];
            if (preload[0]) preload_buf[n++] = ':';
            for (const char *c = preload; *c && n + 1 < preload_cap; c++) preload_buf[n++] = *c;
            preload_buf[n] = 0;
            slots[k++] = preload_buf;
            continue;
        }
        slots[k++] = env[i];
    }
    if (!log) {
        size_t n = 0;
        for (size_t j = 0; j < sizeof LOG_EQ - 1; j++) log_buf[n++] = LOG_EQ[j];
        for (size_t j = 0; j <= g_log_path_len; j++) log_buf[n++] = g_log_path[j];
        slots[k++] = log_buf;
    }
    slots[k] = NULL;
    out->env = slots;
    out->state = 'p';
}

/* Searches PATH the way execvp does, recording each candidate that is absent. */
static int search_path(const char *file, char *out) {
    const char *path = env_lookup(environ, "PATH");
    if (!path) path = "/bin:/usr/bin";
    size_t flen = str_len(file);
    const char *p = path;
    for (;;) {
        const char *s = p;
        while (*p && *p != ':') p++;
        size_t dlen = (size_t)(p - s);
        size_t n = 0;
        if (dlen == 0) {
            out[n++] = '.';
        } else if (dlen + flen + 2 < PATH_MAX) {
            for (size_t i = 0; i < dlen; i++) out[n++] = s[i];
        }
        if (n && n + flen + 2 < PATH_MAX) {
            out[n++] = '/';
            for (size_t i = 0; i <= flen; i++) out[n++] = file[i];
            long rc = syscall(SYS_faccessat, AT_FDCWD, out, X_OK);
            if (rc == 0) {
                struct stat st;
                if (syscall(SYS_newfstatat, AT_FDCWD, out, &st, 0) == 0 && S_ISREG(st.st_mode))
                    return 1;
            }
            int e = errno;
            if (rc != 0) note_failure(AT_FDCWD, out, e);
        }
        if (!*p) break;
        p++;
    }
    return 0;
}

enum exec_kind { EK_EXECVE, EK_EXECVPE, EK_FEXECVE, EK_EXECVEAT, EK_SPAWN, EK_SPAWNP };

struct exec_call {
    enum exec_kind kind;
    const char *path; /* file name or path as given */
    int fd;           /* fexecve / execveat */
    int flags;        /* execveat */
    char *const *argv;
    char *const *envp;
    pid_t *pid;
    const posix_spawn_file_actions_t *fa;
    const posix_spawnattr_t *attr;
};

static int call_real(struct exec_call *c, char *const *env) {
    switch (c->kind) {
    case EK_EXECVE:
        return real_execve ? real_execve(c->path, c->argv, env) : (errno = ENOSYS, -1);
    case EK_EXECVPE:
        return real_execvpe ? real_execvpe(c->path, c->argv, env) : (errno = ENOSYS, -1);
    case EK_FEXECVE:
        return real_fexecve ? real_fexecve(c->fd, c->argv, env) : (errno = ENOSYS, -1);
    case EK_EXECVEAT:
        return real_execveat ? real_execveat(c->fd, c->path, c->argv, env, c->flags)
                             : (errno = ENOSYS, -1);
    case EK_SPAWN:
        return real_posix_spawn ? real_posix_spawn(c->pid, c->path, c->fa, c->attr, c->argv, env)
                                : ENOSYS;
    case EK_SPAWNP:
        return real_posix_spawnp
                   ? real_posix_spawnp(c->pid, c->path, c->fa, c->attr, c->argv, env)
                   : ENOSYS;
    }
    return -1;
}

static int run_exec(struct exec_call *c) {
    if (!active()) return call_real(c, c->envp);
    int saved = errno;
    char resolved[PATH_MAX];
    const char *prog = c->path;
    int dirfd = AT_FDCWD;
    char cls;
    t_busy++;
    if (c->kind == EK_FEXECVE || (c->kind == EK_EXECVEAT && c->path && c->path[0] == 0)) {
        fd_path(c->fd, resolved);
        prog = resolved;
        cls = classify_fd(c->fd, 0);
    } else {
        if (c->kind == EK_EXECVEAT) dirfd = c->fd;
        if ((c->kind == EK_EXECVPE || c->kind == EK_SPAWNP) && prog && prog[0] &&
            !strchr(prog, '/')) {
            if (search_path(prog, resolved)) prog = resolved;
        }
        cls = prog ? classify_path(dirfd, prog, 0) : '?';
    }

    size_t n = env_count(c->envp);
    const char *old = env_lookup(c->envp, "LD_PRELOAD");
    size_t cap = sizeof PRELOAD_EQ + g_self_len + 2 + (old ? str_len(old) : 0);
    char *slots[n + 3];
    char preload_buf[cap];
    char log_buf[sizeof LOG_EQ + g_log_path_len + 1];
    struct child_env ce;
    prepare_env(c->envp, cls, &ce, slots, preload_buf, cap, log_buf);

    char base[PATH_MAX];
    size_t bn = prog ? base_of(dirfd, prog, base) : 0;
    int spawn = c->kind == EK_SPAWN || c->kind == EK_SPAWNP;
    if (!spawn) {
        struct rec r;
        rec_init(&r, 'X');
        rec_field(&r, base, bn);
        rec_str(&r, prog ? prog : "");
        rec_field(&r, &cls, 1);
        rec_field(&r, &ce.state, 1);
        rec_emit(&r);
    }
    t_busy--;
    errno = saved;

    int rc = call_real(c, ce.env);
    int e = spawn ? rc : errno;

    t_busy++;
    if (spawn && rc == 0) {
        char num[24];
        size_t nn = fmt_u(num, (unsigned long)*c->pid);
        struct rec r;
        rec_init(&r, 'P');
        rec_field(&r, num, nn);
        rec_field(&r, base, bn);
        rec_str(&r, prog ? prog : "");
        rec_field(&r, &cls, 1);
        rec_field(&r, &ce.state, 1);
        rec_emit(&r);
    } else {
        char num[24];
        size_t nn = fmt_u(num, (unsigned long)e);
        struct rec r;
        rec_init(&r, 'x');
        rec_field(&r, base, bn);
        rec_str(&r, prog ? prog : "");
        rec_field(&r, num, nn);
        rec_emit(&r);
    }
    t_busy--;
    if (!spawn) errno = e;
    return rc;
}

HOOK int execve(const char *path, char *const argv[], char *const envp[]) {
    struct exec_call c = {.kind = EK_EXECVE, .path = path, .argv = argv, .envp = envp};
    return run_exec(&c);
}

HOOK int execv(const char *path, char *const argv[]) {
    struct exec_call c = {.kind = EK_EXECVE, .path = path, .argv = argv, .envp = environ};
    return run_exec(&c);
}

HOOK int execvpe(const char *file, char *const argv[], char *const envp[]) {
    struct exec_call c = {.kind = EK_EXECVPE, .path = file, .argv = argv, .envp = envp};
    return run_exec(&c);
}

HOOK int execvp(const char *file, char *const argv[]) {
    struct exec_call c = {.kind = EK_EXECVPE, .path = file, .argv = argv, .envp = environ};
    return run_exec(&c);
}

HOOK int fexecve(int fd, char *const argv[], char *const envp[]) {
    struct exec_call c = {.kind = EK_FEXECVE, .fd = fd, .argv = argv, .envp = envp};
    return run_exec(&c);
}

HOOK int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                  int flags) {
    struct exec_call c = {.kind = EK_EXECVEAT, .fd = dirfd, .path = path, .argv = argv,
                          .envp = envp, .flags = flags};
    return run_exec(&c);
}

/* execl, execlp, execle: the variadic argument list becomes an argv on our stack. */
static size_t count_args(const char *arg0, va_list ap) {
    size_t n = 1;
    if (!arg0) return 0;
    while (va_arg(ap, const char *)) n++;
    return n;
}

#define COLLECT_ARGS(argv, n, arg0, ap)                                                           \
    do {                                                                                          \
        (argv)[0] = (char *)(arg0);                                                               \
        for (size_t i_ = 1; i_ <= (n); i_++) (argv)[i_] = va_arg(ap, char *);                     \
    } while (0)

HOOK int execl(const char *path, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    size_t n = count_args(arg0, ap);
    va_end(ap);
    char *argv[n + 1];
    va_start(ap, arg0);
    if (n) COLLECT_ARGS(argv, n - 1, arg0, ap);
    argv[n] = NULL;
    va_end(ap);
    return execv(path, argv);
}

HOOK int execlp(const char *file, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    size_t n = count_args(arg0, ap);
    va_end(ap);
    char *argv[n + 1];
    va_start(ap, arg0);
    if (n) COLLECT_ARGS(argv, n - 1, arg0, ap);
    argv[n] = NULL;
    va_end(ap);
    return execvp(file, argv);
}

HOOK int execle(const char *path, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    size_t n = count_args(arg0, ap);
    va_end(ap);
    char *argv[n + 1];
    va_start(ap, arg0);
    if (n) COLLECT_ARGS(argv, n - 1, arg0, ap);
    argv[n] = NULL;
    if (n) (void)va_arg(ap, char *); /* the NULL that ends the list (arg0 if it was empty) */
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

HOOK int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                     const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    pid_t local;
    struct exec_call c = {.kind = EK_SPAWN, .path = path, .argv = argv, .envp = envp,
                          .pid = pid ? pid : &local, .fa = fa, .attr = attr};
    return run_exec(&c);
}

HOOK int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                      const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    pid_t local;
    struct exec_call c = {.kind = EK_SPAWNP, .path = file, .argv = argv, .envp = envp,
                          .pid = pid ? pid : &local, .fa = fa, .attr = attr};
    return run_exec(&c);
}

/* system() and popen() start /bin/sh through glibc's own posix_spawn, which we cannot
 * interpose, with the current environment: record what that shell will be. */
static void note_shell(void) {
    static const char sh[] = "/bin/sh";
    char cls = classify_path(AT_FDCWD, sh, 0);
    char st;
    const char *preload = env_lookup(environ, "LD_PRELOAD");
    const char *log = env_lookup(environ, LOG_VAR);
    if (log && !(str_len(log) == g_log_path_len && str_eq_n(log, g_log_path, g_log_path_len)))
        st = 'o';
    else if (!preload || !preload_has_self(preload) || !log)
        st = 'z';
    else
        st = 'k';
    struct rec r;
    rec_init(&r, 'H');
    rec_str(&r, sh);
    rec_field(&r, &cls, 1);
    rec_field(&r, &st, 1);
    rec_emit(&r);
}

HOOK int system(const char *cmd) {
    if (active() && cmd) {
        int e = errno;
        t_busy++;
        note_shell();
        t_busy--;
        errno = e;
    }
    if (!real_system) {
        errno = ENOSYS;
        return -1;
    }
    return real_system(cmd);
}

HOOK FILE *popen(const char *cmd, const char *type) {
    if (active() && cmd) {
        int e = errno;
        t_busy++;
        note_shell();
        t_busy--;
        errno = e;
    }
    if (!real_popen) {
        errno = ENOSYS;
        return NULL;
    }
    return real_popen(cmd, type);
}

/* ---------- dlopen ------------------------------------------------------------------------ */

/* dlopen resolves a bare name through the *calling* object's RUNPATH, so a bare name is
 * passed on as a tail call (the caller's return address stays the caller's) after a record
 * naming it; a path is opened from here and the object's real name recorded. */
__attribute__((noinline)) static void note_dlopen_name(const char *file) {
    int e = errno;
    struct rec r;
    t_busy++;
    rec_init(&r, 'D');
    rec_str(&r, file);
    rec_emit(&r);
    t_busy--;
    errno = e;
}

__attribute__((noinline)) static void *dlopen_path(const char *file, int mode) {
    void *h = real_dlopen(file, mode);
    int e = errno;
    if (h) {
        struct link_map *lm = NULL;
        if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && lm->l_name[0] == '/')
            note_type('R', AT_FDCWD, lm->l_name, 'f');
        else
            note_type('R', AT_FDCWD, file, 'f');
    } else {
        struct stat st;
        if (syscall(SYS_newfstatat, AT_FDCWD, file, &st, 0) != 0)
            note_failure(AT_FDCWD, file, errno);
        else
            note_type('R', AT_FDCWD, file, 'f');
    }
    errno = e;
    return h;
}

HOOK void *dlopen(const char *file, int mode) {
    if (!real_dlopen) return NULL;
    if (file && active()) {
        if (strchr(file, '/')) return dlopen_path(file, mode);
        note_dlopen_name(file);
    }
    return real_dlopen(file, mode);
}

/* ---------- what the compile creates ------------------------------------------------------ */

static void note_two(char kind, int dfa, const char *a, int dfb, const char *b) {
    char ba[PATH_MAX], bb[PATH_MAX];
    struct rec r;
    t_busy++;
    size_t na = base_of(dfa, a, ba);
    size_t nb = base_of(dfb, b, bb);
    rec_init(&r, kind);
    rec_field(&r, ba, na);
    rec_str(&r, a);
    rec_field(&r, bb, nb);
    rec_str(&r, b);
    rec_emit(&r);
    t_busy--;
}

#define SUCCESS_NOTE(cond, stmt)                                                                  \
    if (on && (cond)) {                                                                           \
        int e_ = errno;                                                                           \
        stmt;                                                                                     \
        errno = e_;                                                                               \
    }

#define NEED_REAL(name, fail)                                                                     \
    if (!real_##name) {                                                                           \
        errno = ENOSYS;                                                                           \
        return fail;                                                                              \
    }

HOOK int rename(const char *a, const char *b) {
    int on = active();
    NEED_REAL(rename, -1)
    int rc = real_rename(a, b);
    SUCCESS_NOTE(rc == 0 && a && b, note_two('N', AT_FDCWD, a, AT_FDCWD, b))
    return rc;
}

HOOK int renameat(int da, const char *a, int db, const char *b) {
    int on = active();
    NEED_REAL(renameat, -1)
    int rc = real_renameat(da, a, db, b);
    SUCCESS_NOTE(rc == 0 && a && b, note_two('N', da, a, db, b))
    return rc;
}

HOOK int renameat2(int da, const char *a, int db, const char *b, unsigned int flags) {
    int on = active();
    NEED_REAL(renameat2, -1)
    int rc = real_renameat2(da, a, db, b, flags);
    SUCCESS_NOTE(rc == 0 && a && b, note_two('N', da, a, db, b))
    return rc;
}

HOOK int unlink(const char *p) {
    int on = active();
    NEED_REAL(unlink, -1)
    int rc = real_unlink(p);
    SUCCESS_NOTE(rc == 0 && p, note_path('U', AT_FDCWD, p, NULL, 0))
    return rc;
}

HOOK int unlinkat(int d, const char *p, int flags) {
    int on = active();
    NEED_REAL(unlinkat, -1)
    int rc = real_unlinkat(d, p, flags);
    SUCCESS_NOTE(rc == 0 && p, note_path('U', d, p, NULL, 0))
    return rc;
}

HOOK int mkdir(const char *p, mode_t mode) {
    int on = active();
    NEED_REAL(mkdir, -1)
    int rc = real_mkdir(p, mode);
    SUCCESS_NOTE(rc == 0 && p, note_path('M', AT_FDCWD, p, NULL, 0))
    return rc;
}

HOOK int mkdirat(int d, const char *p, mode_t mode) {
    int on = active();
    NEED_REAL(mkdirat, -1)
    int rc = real_mkdirat(d, p, mode);
    SUCCESS_NOTE(rc == 0 && p, note_path('M', d, p, NULL, 0))
    return rc;
}

HOOK int link(const char *a, const char *b) {
    int on = active();
    NEED_REAL(link, -1)
    int rc = real_link(a, b);
    SUCCESS_NOTE(rc == 0 && b, note_path('C', AT_FDCWD, b, NULL, 0))
    return rc;
}

HOOK int linkat(int da, const char *a, int db, const char *b, int flags) {
    int on = active();
    NEED_REAL(linkat, -1)
    int rc = real_linkat(da, a, db, b, flags);
    SUCCESS_NOTE(rc == 0 && b, note_path('C', db, b, NULL, 0))
    return rc;
}

HOOK int symlink(const char *target, const char *b) {
    int on = active();
    NEED_REAL(symlink, -1)
    int rc = real_symlink(target, b);
    SUCCESS_NOTE(rc == 0 && b, note_path('C', AT_FDCWD, b, NULL, 0))
    return rc;
}

HOOK int symlinkat(const char *target, int db, const char *b) {
    int on = active();
    NEED_REAL(symlinkat, -1)
    int rc = real_symlinkat(target, db, b);
    SUCCESS_NOTE(rc == 0 && b, note_path('C', db, b, NULL, 0))
    return rc;
}

HOOK int truncate(const char *p, off_t len) {
    int on = active();
    NEED_REAL(truncate, -1)
    int rc = real_truncate(p, len);
    SUCCESS_NOTE(rc == 0 && p, note_path('W', AT_FDCWD, p, NULL, 0))
    return rc;
}

HOOK int truncate64(const char *p, off_t len) {
    int on = active();
    NEED_REAL(truncate64, -1)
    int rc = real_truncate64(p, len);
    SUCCESS_NOTE(rc == 0 && p, note_path('W', AT_FDCWD, p, NULL, 0))
    return rc;
}

/* mkstemp and friends open through glibc's internal open: record the file they made. */
#define MKSTEMP_HOOK(name, params, args)                                                          \
    HOOK int name params {                                                                        \
        int on = active();                                                                        \
        NEED_REAL(name, -1)                                                                       \
        int fd = real_##name args;                                                                \
        SUCCESS_NOTE(fd >= 0, note_path('W', AT_FDCWD, tmpl, NULL, 0))                            \
        return fd;                                                                                \
    }
MKSTEMP_HOOK(mkstemp, (char *tmpl), (tmpl))
MKSTEMP_HOOK(mkstemp64, (char *tmpl), (tmpl))
MKSTEMP_HOOK(mkostemp, (char *tmpl, int fl), (tmpl, fl))
MKSTEMP_HOOK(mkostemp64, (char *tmpl, int fl), (tmpl, fl))
MKSTEMP_HOOK(mkstemps, (char *tmpl, int sl), (tmpl, sl))
MKSTEMP_HOOK(mkstemps64, (char *tmpl, int sl), (tmpl, sl))
MKSTEMP_HOOK(mkostemps, (char *tmpl, int sl, int fl), (tmpl, sl, fl))
MKSTEMP_HOOK(mkostemps64, (char *tmpl, int sl, int fl), (tmpl, sl, fl))

HOOK char *mkdtemp(char *tmpl) {
    int on = active();
    NEED_REAL(mkdtemp, NULL)
    char *d = real_mkdtemp(tmpl);
    SUCCESS_NOTE(d != NULL, note_path('M', AT_FDCWD, d, NULL, 0))
    return d;
}

/* ---------- keeping the log descriptor ours ------------------------------------------------ */

/* A program that closes or replaces our descriptor (close-all loops before exec, dup2 onto a
 * high number) must not have our next record land in whatever file reuses the number. */
static void forget_log_fd_if(int hit) {
    if (hit && (pid_t)raw_getpid() == g_owner) g_log_fd = -1;
}

HOOK int close(int fd) {
    if (fd >= 0 && fd == g_log_fd) {
        int e = errno;
        forget_log_fd_if(1);
        errno = e;
    }
    if (!real_close) return (int)syscall(SYS_close, fd);
    return real_close(fd);
}

HOOK int close_range(unsigned int first, unsigned int last, int flags) {
    int fd = g_log_fd;
    if (fd >= 0 && (unsigned)fd >= first && (unsigned)fd <= last && !(flags & CLOSE_RANGE_CLOEXEC)) {
        int e = errno;
        forget_log_fd_if(1);
        errno = e;
    }
    if (!real_close_range) return (int)syscall(SYS_close_range, first, last, flags);
    return real_close_range(first, last, flags);
}

HOOK void closefrom(int low) {
    int fd = g_log_fd;
    if (fd >= 0 && fd >= low) {
        int e = errno;
        forget_log_fd_if(1);
        errno = e;
    }
    if (real_closefrom) real_closefrom(low);
}

HOOK int dup2(int old, int new_fd) {
    if (new_fd >= 0 && new_fd == g_log_fd && old != new_fd) {
        int e = errno;
        forget_log_fd_if(1);
        errno = e;
    }
    if (!real_dup2) return (int)syscall(SYS_dup2, old, new_fd);
    return real_dup2(old, new_fd);
}

HOOK int dup3(int old, int new_fd, int flags) {
    if (new_fd >= 0 && new_fd == g_log_fd) {
        int e = errno;
        forget_log_fd_if(1);
        errno = e;
    }
    if (!real_dup3) return (int)syscall(SYS_dup3, old, new_fd, flags);
    return real_dup3(old, new_fd, flags);
}

/* ---------- process start ---------------------------------------------------------------- */

/* Every observed process says so once: its executable, cwd and parent. The direct child of
 * the process that made the session (named by KACHE_RECORDER_ROOT) also writes its whole
 * environment, so that the parser can tell variables the compile was given from variables
 * the compile set for its own children. Libraries the loader mapped before main (which no
 * hook sees) are recorded as read. */
static int note_loaded(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    if (info->dlpi_name && info->dlpi_name[0] == '/' &&
        !(str_len(info->dlpi_name) == g_self_len &&
          str_eq_n(info->dlpi_name, g_self, g_self_len)))
        note_type('R', AT_FDCWD, info->dlpi_name, 'f');
    return 0;
}

static void record_start(void) {
    int e = errno;
    char exe[PATH_MAX], cwd[PATH_MAX], ppid[24];
    t_busy++;
    long n = syscall(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", exe, sizeof exe - 1);
    if (n < 0) n = 0;
    long c = syscall(SYS_getcwd, cwd, sizeof cwd);
    size_t cn = c > 1 && cwd[0] == '/' ? (size_t)c - 1 : 0;
    long parent = syscall(SYS_getppid);
    size_t pn = fmt_u(ppid, (unsigned long)parent);
    struct rec r;
    rec_init(&r, 'S');
    rec_field(&r, exe, (size_t)n);
    rec_field(&r, cwd, cn);
    rec_field(&r, ppid, pn);
    rec_emit(&r);

    const char *root = env_lookup(environ, ROOT_VAR);
    if (root && str_len(root) == pn && str_eq_n(root, ppid, pn)) {
        /* One record holding every variable: copied into an anonymous mapping, since the
         * environment may hold more entries than one writev takes. */
        size_t total = 0, count = env_count(environ);
        for (size_t i = 0; i < count; i++) total += str_len(environ[i]) + 1;
        void *m = (void *)syscall(SYS_mmap, NULL, total + 1, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m != MAP_FAILED) {
            char *b = m;
            size_t k = 0;
            for (size_t i = 0; i < count; i++) {
                b[k++] = 0;
                size_t l = str_len(environ[i]);
                for (size_t j = 0; j < l; j++) b[k++] = environ[i][j];
            }
            /* Fields are added as raw bytes: the buffer already holds the separators. */
            rec_init(&r, 'I');
            r.iov[1].iov_base = b;
            r.iov[1].iov_len = k;
            r.n = 2;
            rec_emit(&r);
            syscall(SYS_munmap, m, total + 1);
        } else {
            rec_init(&r, 'I');
            rec_field(&r, "?", 1);
            rec_emit(&r);
        }
    }
    dl_iterate_phdr(note_loaded, NULL);
    t_busy--;
    errno = e;
}
