/* A power cut, simulated for the tests: a folder keeps only what was synced.
 *
 * Preloaded (LD_PRELOAD) into a process under test, this records, for the folder
 * POWERCUT_ROOT, what a disk would still hold after a power cut, in the worst case: a
 * file's data as of its last fsync or fdatasync, and a folder's entries (names and the
 * inodes they point to) as of the folder's last fsync, as POSIX promises and no more. A
 * rename, a new file or an unlink is lost unless its folder was synced after it.
 *
 * Into POWERCUT_SHADOW go `inodes/<id>` (a synced file's data, whole) and `dirs/<id>` (a
 * synced folder's entries, one "type id name" line each). The tests'
 * Python side starts the shadow from the folder as it stands (_powercut.Disk.settle) and
 * builds the folder after a cut from it (Disk.cut): each name as of its folder's last sync,
 * each file's data as of its own last sync, nothing (an empty file) if it never was.
 *
 * A file's id is its inode number and, where the file system gives one, its file handle
 * (name_to_handle_at: on ext4 and XFS, the inode's generation): ext4 gives a freed inode
 * number to the next file made, and a new file's data filed under the old file's number
 * would be what the old name shows after the cut (a name whose folder was not synced since
 * the rename that freed it: seen as an import's CSV holding the backup's SQLite journal).
 * The Python side computes the same ids (_powercut.file_id).
 *
 * Copies are made under an exclusive flock, whole, then renamed into place, so that copies
 * by several processes never go back in time, and a process killed in the middle of one
 * leaves the copy before it.
 *
 * Every sync under the root is also counted: POWERCUT_TALLY names a file that gets a byte
 * per sync, and with POWERCUT_KILL_AT=N the process kills itself (SIGKILL) right after its
 * Nth. Since only syncs change what a power cut leaves, cutting after each sync in turn
 * visits every state a power cut can leave.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAX_HANDLE_SZ
#define MAX_HANDLE_SZ 128
#endif

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

/* Looked up once, when the library is loaded, before any thread can call them. */
__attribute__((constructor)) static void resolve(void) {
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
}

/* Whether the file open as `fd` lies in the root folder (or is it). */
static int under_root(int fd) {
    const char *root = getenv("POWERCUT_ROOT");
    char link[64], path[PATH_MAX];
    if (!root || !getenv("POWERCUT_SHADOW")) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t got = readlink(link, path, sizeof path - 1);
    if (got <= 0) return 0;
    path[got] = 0;
    size_t n = strlen(root);
    return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == 0);
}

/* The id of the file `name` in the folder `dir` (with AT_EMPTY_PATH and "": of the file
 * open as `dir`), whose inode number is `inode`, into `out`: "<inode>", then
 * "-<handle type>-<handle in hex>" where the file system gives a handle. Files that follow
 * one another under one inode number have different handles (see the top). */
static void file_id(int dir, const char *name, int flags, unsigned long inode, char *out,
                    size_t size) {
    union {
        struct file_handle handle;
        char space[sizeof(struct file_handle) + MAX_HANDLE_SZ];
    } found;
    int mount_id, len = snprintf(out, size, "%lu", inode);
    found.handle.handle_bytes = MAX_HANDLE_SZ;
    if (name_to_handle_at(dir, name, &found.handle, &mount_id, flags) != 0) return;
    len += snprintf(out + len, size - len, "-%d-", found.handle.handle_type);
    for (unsigned i = 0; i < found.handle.handle_bytes && (size_t)len + 3 <= size; i++)
        len += snprintf(out + len, size - len, "%02x", found.handle.f_handle[i]);
}

/* Write what `fill` produces to the shadow file `kind/<id>`, atomically. */
static void put(const char *kind, const char *id, int (*fill)(int, int), int source) {
    char target[PATH_MAX], temp[PATH_MAX + 32], lock_path[PATH_MAX];
    const char *shadow = getenv("POWERCUT_SHADOW");
    snprintf(lock_path, sizeof lock_path, "%s/lock", shadow);
    snprintf(target, sizeof target, "%s/%s/%s", shadow, kind, id);
    snprintf(temp, sizeof temp, "%s.%d", target, (int)getpid());
    int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock < 0) return;
    flock(lock, LOCK_EX);
    int out = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out >= 0) {
        int ok = fill(source, out);
        close(out);
        if (ok) rename(temp, target); else unlink(temp);
    }
    close(lock); /* drops the flock */
}

static int copy_data(int in, int out) {
    char buf[1 << 16];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) return 0;
    return n == 0;
}

static int list_entries(int dir_fd, int out) {
    int own = dup(dir_fd);
    DIR *dir = own < 0 ? NULL : fdopendir(own);
    if (!dir) {
        if (own >= 0) close(own);
        return 0;
    }
    FILE *listing = fdopen(dup(out), "w");
    struct dirent *entry;
    struct stat st;
    char id[2 * MAX_HANDLE_SZ + 64];
    while (listing && (entry = readdir(dir))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
        if (fstatat(dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        char type = S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : '-';
        /* (name_to_handle_at follows no link unless asked: AT_SYMLINK_NOFOLLOW is EINVAL) */
        file_id(dirfd(dir), entry->d_name, 0, (unsigned long)st.st_ino, id, sizeof id);
        fprintf(listing, "%c %s %s\n", type, id, entry->d_name);
    }
    int ok = listing && fclose(listing) == 0;
    closedir(dir); /* closes `own` */
    return ok;
}

static long syncs;

static void count_sync(void) {
    long n = __atomic_add_fetch(&syncs, 1, __ATOMIC_SEQ_CST);
    const char *tally = getenv("POWERCUT_TALLY"), *kill_at = getenv("POWERCUT_KILL_AT");
    if (tally) {
        int fd = open(tally, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, ".", 1) != 1) { /* the count is only lower: harmless */ }
            close(fd);
        }
    }
    if (kill_at && n == atol(kill_at)) kill(getpid(), SIGKILL);
}

/* Record what the file or folder open as `fd` holds now, as synced. */
static void synced(int fd) {
    char link[64];
    struct stat st;
    if (fstat(fd, &st) != 0 || !under_root(fd)) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int again = open(link, O_RDONLY | O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
    if (again < 0) return; /* a fresh descriptor: `fd` may be write-only, or mid-file */
    char id[2 * MAX_HANDLE_SZ + 64];
    file_id(fd, "", AT_EMPTY_PATH, (unsigned long)st.st_ino, id, sizeof id);
    if (S_ISREG(st.st_mode)) put("inodes", id, copy_data, again);
    if (S_ISDIR(st.st_mode)) put("dirs", id, list_entries, again);
    close(again);
    count_sync();
}

int fsync(int fd) {
    int result = real_fsync(fd), saved = errno;
    if (result == 0) synced(fd);
    errno = saved;
    return result;
}

int fdatasync(int fd) {
    int result = real_fdatasync(fd), saved = errno;
    if (result == 0) synced(fd);
    errno = saved;
    return result;
}
