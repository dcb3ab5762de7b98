/* A power cut, simulated for the tests: what a file held when it was last synced.
 *
 * Preloaded (LD_PRELOAD) into a process under test, this keeps a shadow copy of every
 * regular file under POWERCUT_ROOT in POWERCUT_SHADOW, taken each time the file is synced
 * (fsync or fdatasync, from Python or from SQLite). After the process is killed, the
 * shadow folder is what the disk would hold after a power cut at that moment, in the worst
 * case for data: every write since a file's last sync is lost.
 *
 * Names are kept as they are, at once: a rename or unlink under the root renames or
 * removes the shadow copy too (a file renamed before it was ever synced leaves an empty
 * file under its new name). That is kinder than a real disk, where a rename is durable only
 * once its folder is synced; the tests judge data, not names.
 *
 * Copies are taken under an exclusive flock, whole, and renamed into place, so that copies
 * by several processes never go back in time, and a process killed in the middle of a copy
 * leaves the previous copy.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);

/* Looked up once, when the library is loaded, before any thread can call them. */
__attribute__((constructor)) static void resolve(void) {
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_rename = dlsym(RTLD_NEXT, "rename");
    real_renameat = dlsym(RTLD_NEXT, "renameat");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    real_unlinkat = dlsym(RTLD_NEXT, "unlinkat");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
}

/* The shadow path of `path` into `out`; 0 when `path` is not under the root. */
static int shadow_of(const char *path, char *out) {
    const char *root = getenv("POWERCUT_ROOT"), *shadow = getenv("POWERCUT_SHADOW");
    if (!root || !shadow) return 0;
    size_t n = strlen(root);
    if (strncmp(path, root, n) != 0 || path[n] != '/') return 0;
    return snprintf(out, PATH_MAX, "%s%s", shadow, path + n) < PATH_MAX;
}

/* `name` relative to the folder `dirfd` (or the working folder) as an absolute path. */
static int absolute(int dirfd, const char *name, char *out) {
    char base[PATH_MAX];
    if (name[0] == '/') return snprintf(out, PATH_MAX, "%s", name) < PATH_MAX;
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base)) return 0;
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t got = readlink(link, base, sizeof base - 1);
        if (got <= 0) return 0;
        base[got] = 0;
    }
    return snprintf(out, PATH_MAX, "%s/%s", base, name) < PATH_MAX;
}

static int lock_shadow(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s.lock", getenv("POWERCUT_SHADOW"));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) flock(fd, LOCK_EX);
    return fd;
}

static void unlock_shadow(int fd) {
    if (fd >= 0) close(fd); /* closing drops the flock */
}

static void make_parents(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(dir, 0755);
        *p = '/';
    }
}

/* Copy what the file open as `fd` holds now to its shadow path. */
static void take_copy(int fd) {
    char link[64], path[PATH_MAX], target[PATH_MAX], temp[PATH_MAX + 32];
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t got = readlink(link, path, sizeof path - 1);
    if (got <= 0) return;
    path[got] = 0;
    if (!shadow_of(path, target)) return;
    int lock = lock_shadow();
    int in = open(link, O_RDONLY | O_CLOEXEC); /* the same file, even if renamed since */
    if (in >= 0) {
        make_parents(target);
        snprintf(temp, sizeof temp, "%s.powercut-%d", target, (int)getpid());
        int out = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out >= 0) {
            char buf[1 << 16];
            ssize_t n;
            int ok = 1;
            while ((n = read(in, buf, sizeof buf)) > 0)
                if (write(out, buf, (size_t)n) != n) ok = 0;
            if (n < 0) ok = 0;
            close(out);
            if (ok) real_rename(temp, target); else real_unlink(temp);
        }
        close(in);
    }
    unlock_shadow(lock);
}

int fsync(int fd) {
    int saved, result = real_fsync(fd);
    saved = errno;
    if (result == 0) take_copy(fd);
    errno = saved;
    return result;
}

int fdatasync(int fd) {
    int saved, result = real_fdatasync(fd);
    saved = errno;
    if (result == 0) take_copy(fd);
    errno = saved;
    return result;
}

static void shadow_rename(int olddir, const char *old, int newdir, const char *new) {
    char a[PATH_MAX], b[PATH_MAX], sa[PATH_MAX], sb[PATH_MAX];
    if (!absolute(olddir, old, a) || !absolute(newdir, new, b)) return;
    int from = shadow_of(a, sa), to = shadow_of(b, sb);
    if (!from && !to) return;
    struct stat st;
    int folder = stat(b, &st) == 0 && S_ISDIR(st.st_mode);
    int lock = lock_shadow();
    if (to) make_parents(sb);
    if (from && to && real_rename(sa, sb) == 0) {
        /* moved with its last synced content */
    } else if (from && !to) {
        if (folder) rmdir(sa); else real_unlink(sa); /* moved out of the root */
    } else if (to && folder) {
        mkdir(sb, 0755);
    } else if (to) {
        int fd = open(sb, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); /* never synced */
        if (fd >= 0) close(fd);
    }
    unlock_shadow(lock);
}

int rename(const char *old, const char *new) {
    int result = real_rename(old, new), saved = errno;
    if (result == 0) shadow_rename(AT_FDCWD, old, AT_FDCWD, new);
    errno = saved;
    return result;
}

int renameat(int olddir, const char *old, int newdir, const char *new) {
    int result = real_renameat(olddir, old, newdir, new), saved = errno;
    if (result == 0) shadow_rename(olddir, old, newdir, new);
    errno = saved;
    return result;
}

static void shadow_unlink(int dirfd, const char *name, int flags) {
    char path[PATH_MAX], shadow[PATH_MAX];
    if (!absolute(dirfd, name, path) || !shadow_of(path, shadow)) return;
    int lock = lock_shadow();
    if (flags & AT_REMOVEDIR) rmdir(shadow); else real_unlink(shadow);
    unlock_shadow(lock);
}

int unlink(const char *name) {
    int result = real_unlink(name), saved = errno;
    if (result == 0) shadow_unlink(AT_FDCWD, name, 0);
    errno = saved;
    return result;
}

int unlinkat(int dirfd, const char *name, int flags) {
    int result = real_unlinkat(dirfd, name, flags), saved = errno;
    if (result == 0) shadow_unlink(dirfd, name, flags);
    errno = saved;
    return result;
}
