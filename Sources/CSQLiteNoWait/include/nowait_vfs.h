#ifndef LACQUER_NOWAIT_VFS_H
#define LACQUER_NOWAIT_VFS_H

/// The name of the VFS that never waits for the disk.
#define LACQUER_NOWAIT_VFS_NAME "lacquer-nowait"

/// Registers the "lacquer-nowait" VFS (not as the default); idempotent and thread safe.
/// Returns an SQLite result code: SQLITE_OK, or SQLITE_ERROR when the default VFS is too old to
/// wrap (callers then keep every read on their blocking threads).
int lacquer_nowait_vfs_register(void);

/// Process-wide SQLite settings, applied once before SQLite initialises (later calls do
/// nothing): no memory statistics, whose global mutex every allocation of every connection
/// takes (SQLITE_CONFIG_MEMSTATUS).
void lacquer_sqlite_configure(void);

/// A small number unique to the calling thread (0, 1, 2, ... in order of first call), so that
/// each event loop starts with a reader of its own.
int lacquer_thread_slot(void);

/// Tests only: while `on` is nonzero, every read on the calling thread through the nowait VFS fails
/// as a read of a page
/// that is not cached does (the kernel may start readahead for such a read and finish it before
/// the read looks again, so a test cannot count on a dropped page staying absent).
void lacquer_nowait_fail_reads(int on);

/// What tells one version of a file from another: a write to it, a rename or a replacement
/// changes the inode or its change time (st_ctim, which no one sets at will), and the size.
struct lacquer_file_identity {
    unsigned long long device;
    unsigned long long inode;
    long long change_seconds;
    long long change_nanoseconds;
    long long size;
};

/// Reads the identity of open file `fd`. Returns 0, or a negative errno.
int lacquer_file_identity(int fd, struct lacquer_file_identity *identity);

/// Whether open file `fd` may be sent without waiting for the disk as the version `expected`
/// names: same identity, still linked (not removed), and every page of it in the page cache
/// (cachestat(2), Linux >= 6.5). Returns 0; else -ESTALE when it is another version or was
/// removed, -EAGAIN when it is not all cached (or the kernel cannot tell), another negative errno
/// on other failures.
int lacquer_check_if_cached(int fd, const struct lacquer_file_identity *expected);

/// Opens the file at `path` for reading when `lacquer_check_if_cached` passes for it. Returns the
/// descriptor; else -ENOENT when there is no such file, or what the check returned.
int lacquer_open_if_cached(const char *path, const struct lacquer_file_identity *expected);

#endif
