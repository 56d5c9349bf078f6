// A VFS shim over SQLite's default (unix) VFS whose reads never wait for the disk.
//
// Reads of the main database and its WAL go through preadv2(2) with RWF_NOWAIT (Linux >= 4.14):
// a page that is in the kernel's page cache is copied as by pread(2); one that is not makes the
// read fail with EAGAIN (the kernel may start reading it ahead; the read does not wait for it),
// which the shim turns into SQLITE_IOERR_READ. The statement then fails and the caller retries
// the same query on a thread that may block.
// A read error aborts only the statement: the pager drops the page it could not read and the
// connection stays usable (sqlite.org/c3ref/io_methods.html: xRead returns an error code).
// Everything else (locks, the WAL index in shared memory, writes, which a query-only
// connection never makes) is the default VFS's. xSleep does not sleep, so a reader that would
// back off (WAL read-lock contention) retries at once and, past SQLite's limit, fails over.
// Structure after SQLite's own shims (ext/misc/vfstrace.c, cksumvfs.c).
#define _GNU_SOURCE
#include <sqlite3.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include "nowait_vfs.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

typedef struct NoWaitFile {
    sqlite3_file base;          // pMethods: ours
    int fd;                     // our own read-only descriptor, -1 when reads are the base's
    sqlite3_file *real;         // the base VFS's file, allocated right after this struct
} NoWaitFile;

static sqlite3_vfs nowait_vfs;
static sqlite3_io_methods nowait_methods;
#define BASE ((sqlite3_vfs *)nowait_vfs.pAppData)
#define REAL(f) (((NoWaitFile *)(f))->real)

static __thread int fail_reads;

void lacquer_nowait_fail_reads(int on) {
    fail_reads = on;
}

static int nw_read(sqlite3_file *file, void *buffer, int amount, sqlite3_int64 offset) {
    NoWaitFile *p = (NoWaitFile *)file;
    if (p->fd < 0) return REAL(file)->pMethods->xRead(REAL(file), buffer, amount, offset);
    if (fail_reads) return SQLITE_IOERR_READ;
    char *out = buffer;
    int done = 0;
    while (done < amount) {
        struct iovec iov = { out + done, (size_t)(amount - done) };
        ssize_t n = preadv2(p->fd, &iov, 1, offset + done, RWF_NOWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            // EAGAIN: not in the page cache. Anything else (a kernel without RWF_NOWAIT, an I/O
            // error) is also left to the blocking retry, which reads with the base VFS.
            return SQLITE_IOERR_READ;
        }
        if (n == 0) {
            // End of file: SQLite expects the rest zeroed and SQLITE_IOERR_SHORT_READ, as unix does.
            memset(out + done, 0, (size_t)(amount - done));
            return SQLITE_IOERR_SHORT_READ;
        }
        done += (int)n;
    }
    return SQLITE_OK;
}

static int nw_close(sqlite3_file *file) {
    NoWaitFile *p = (NoWaitFile *)file;
    if (p->fd >= 0) { close(p->fd); p->fd = -1; }
    int rc = REAL(file)->pMethods ? REAL(file)->pMethods->xClose(REAL(file)) : SQLITE_OK;
    return rc;
}
static int nw_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o) { return REAL(f)->pMethods->xWrite(REAL(f), b, n, o); }
static int nw_truncate(sqlite3_file *f, sqlite3_int64 s) { return REAL(f)->pMethods->xTruncate(REAL(f), s); }
static int nw_sync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int nw_file_size(sqlite3_file *f, sqlite3_int64 *s) { return REAL(f)->pMethods->xFileSize(REAL(f), s); }
static int nw_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int nw_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int nw_check_reserved(sqlite3_file *f, int *r) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r); }
static int nw_file_control(sqlite3_file *f, int op, void *a) {
    // No memory mapping: a page fault in a mapped page would wait for the disk.
    if (op == SQLITE_FCNTL_MMAP_SIZE) { if (a) *(sqlite3_int64 *)a = 0; return SQLITE_OK; }
    return REAL(f)->pMethods->xFileControl(REAL(f), op, a);
}
static int nw_sector_size(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int nw_device_characteristics(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int nw_shm_map(sqlite3_file *f, int i, int sz, int ext, void volatile **pp) { return REAL(f)->pMethods->xShmMap(REAL(f), i, sz, ext, pp); }
static int nw_shm_lock(sqlite3_file *f, int o, int n, int fl) { return REAL(f)->pMethods->xShmLock(REAL(f), o, n, fl); }
static void nw_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int nw_shm_unmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }
static int nw_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp) { (void)f; (void)o; (void)n; *pp = 0; return SQLITE_OK; }
static int nw_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p) { (void)f; (void)o; (void)p; return SQLITE_OK; }

static int nw_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *outFlags) {
    (void)vfs;
    NoWaitFile *p = (NoWaitFile *)file;
    memset(p, 0, sizeof(*p));
    p->fd = -1;
    p->real = (sqlite3_file *)&p[1];
    int rc = BASE->xOpen(BASE, name, p->real, flags, outFlags);
    if (rc != SQLITE_OK) {
        p->base.pMethods = 0;
        return rc;
    }
    if (name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL))) {
        p->fd = open(name, O_RDONLY | O_CLOEXEC);
    }
    p->base.pMethods = &nowait_methods;
    return SQLITE_OK;
}
static int nw_delete(sqlite3_vfs *v, const char *n, int s) { (void)v; return BASE->xDelete(BASE, n, s); }
static int nw_access(sqlite3_vfs *v, const char *n, int f, int *r) { (void)v; return BASE->xAccess(BASE, n, f, r); }
static int nw_full_pathname(sqlite3_vfs *v, const char *n, int sz, char *out) { (void)v; return BASE->xFullPathname(BASE, n, sz, out); }
static void *nw_dl_open(sqlite3_vfs *v, const char *n) { (void)v; return BASE->xDlOpen(BASE, n); }
static void nw_dl_error(sqlite3_vfs *v, int n, char *m) { (void)v; BASE->xDlError(BASE, n, m); }
static void (*nw_dl_sym(sqlite3_vfs *v, void *h, const char *s))(void) { (void)v; return BASE->xDlSym(BASE, h, s); }
static void nw_dl_close(sqlite3_vfs *v, void *h) { (void)v; BASE->xDlClose(BASE, h); }
static int nw_randomness(sqlite3_vfs *v, int n, char *out) { (void)v; return BASE->xRandomness(BASE, n, out); }
static int nw_sleep(sqlite3_vfs *v, int micros) { (void)v; (void)micros; return 0; }
static int nw_current_time(sqlite3_vfs *v, double *t) { (void)v; return BASE->xCurrentTime(BASE, t); }
static int nw_get_last_error(sqlite3_vfs *v, int n, char *m) { (void)v; return BASE->xGetLastError ? BASE->xGetLastError(BASE, n, m) : 0; }
static int nw_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *t) { (void)v; return BASE->xCurrentTimeInt64(BASE, t); }

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int registered = SQLITE_ERROR;

static void register_once(void) {
    sqlite3_vfs *base = sqlite3_vfs_find(0);
    if (!base || base->iVersion < 2 || !base->xCurrentTimeInt64) return;
    nowait_methods = (sqlite3_io_methods){
        .iVersion = 3,
        .xClose = nw_close, .xRead = nw_read, .xWrite = nw_write, .xTruncate = nw_truncate, .xSync = nw_sync,
        .xFileSize = nw_file_size, .xLock = nw_lock, .xUnlock = nw_unlock, .xCheckReservedLock = nw_check_reserved,
        .xFileControl = nw_file_control, .xSectorSize = nw_sector_size, .xDeviceCharacteristics = nw_device_characteristics,
        .xShmMap = nw_shm_map, .xShmLock = nw_shm_lock, .xShmBarrier = nw_shm_barrier, .xShmUnmap = nw_shm_unmap,
        .xFetch = nw_fetch, .xUnfetch = nw_unfetch,
    };
    nowait_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(NoWaitFile) + base->szOsFile,
        .mxPathname = base->mxPathname,
        .zName = LACQUER_NOWAIT_VFS_NAME,
        .pAppData = base,
        .xOpen = nw_open, .xDelete = nw_delete, .xAccess = nw_access, .xFullPathname = nw_full_pathname,
        .xDlOpen = nw_dl_open, .xDlError = nw_dl_error, .xDlSym = nw_dl_sym, .xDlClose = nw_dl_close,
        .xRandomness = nw_randomness, .xSleep = nw_sleep, .xCurrentTime = nw_current_time,
        .xGetLastError = nw_get_last_error, .xCurrentTimeInt64 = nw_current_time_int64,
    };
    registered = sqlite3_vfs_register(&nowait_vfs, 0);
}

static pthread_once_t configure_once = PTHREAD_ONCE_INIT;
static void configure(void) {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}
void lacquer_sqlite_configure(void) {
    pthread_once(&configure_once, configure);
}

static int next_slot;
static __thread int slot = -1;
int lacquer_thread_slot(void) {
    if (slot < 0) slot = __atomic_fetch_add(&next_slot, 1, __ATOMIC_RELAXED);
    return slot;
}

int lacquer_nowait_vfs_register(void) {
    pthread_once(&once, register_once);
    return registered;
}


// A body file that may be sent with sendfile(2) from an event loop: sendfile reads the pages it
// sends, and a page that is not cached would make the loop wait for the disk. cachestat(2)
// counts the cached pages of a range without touching them (the counts are a snapshot: a page
// reclaimed right after is read back by sendfile, which is rare and bounded by one file).
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct lacquer_cachestat_range { unsigned long long off, len; };
struct lacquer_cachestat {
    unsigned long long nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

static void identity_of(const struct stat *info, struct lacquer_file_identity *identity) {
    identity->device = (unsigned long long)info->st_dev;
    identity->inode = (unsigned long long)info->st_ino;
    identity->change_seconds = (long long)info->st_ctim.tv_sec;
    identity->change_nanoseconds = (long long)info->st_ctim.tv_nsec;
    identity->size = (long long)info->st_size;
}

int lacquer_file_identity(int fd, struct lacquer_file_identity *identity) {
    struct stat info;
    if (fstat(fd, &info) != 0) return -errno;
    identity_of(&info, identity);
    return 0;
}

int lacquer_check_if_cached(int fd, const struct lacquer_file_identity *expected) {
    struct stat info;
    if (fstat(fd, &info) != 0) return -errno;
    struct lacquer_file_identity found;
    identity_of(&info, &found);
    long long length = expected->size;
    if (memcmp(&found, expected, sizeof found) != 0 || info.st_nlink == 0 || length <= 0) return -ESTALE;
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long pages = ((unsigned long long)length + (unsigned long long)page - 1) / (unsigned long long)page;
    struct lacquer_cachestat_range range = { 0, (unsigned long long)length };
    struct lacquer_cachestat counts;
    memset(&counts, 0, sizeof counts);
    if (syscall(__NR_cachestat, fd, &range, &counts, 0) != 0 || counts.nr_cache < pages) return -EAGAIN;
    return 0;
}

int lacquer_open_if_cached(const char *path, const struct lacquer_file_identity *expected) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int checked = lacquer_check_if_cached(fd, expected);
    if (checked != 0) {
        close(fd);
        return checked;
    }
    return fd;
}
