/* umvu C core: served files that are windows on a host file (see core.h).
 *
 * A vudev partition, loop device or ramdisk is bytes [offset, offset+size)
 * of a file the hypervisor holds. Its data calls (read, write, their p-, v-
 * and v2 forms, lseek) are answered here, at the seccomp stop, with no
 * Python: the bytes move in one copy between the tracee's buffers and a
 * shared mapping of the window (process_vm_readv/writev), or through a
 * buffer and pread/pwrite when the file cannot be mapped. Every write is
 * clamped to the window, so nothing outside it is ever touched; the offset
 * of the open file lives here, shared by the descriptors dup'ed from it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "core.h"
#include "fastpath.h"

#define MAX_WINDOWS 4096
#define MAX_IO (16UL << 20)         /* a call through the buffer moves at most
                                       this much (a short count)...          */
#define MAX_RW 0x7ffff000UL         /* ...through the mapping, the kernel's
                                       own limit (MAX_RW_COUNT)              */
#define MAX_IOV 1024                /* UIO_MAXIOV */

enum { NR_READ = 0, NR_WRITE = 1, NR_LSEEK = 8, NR_PREAD64 = 17, NR_PWRITE64 = 18,
       NR_READV = 19, NR_WRITEV = 20, NR_PREADV = 295, NR_PWRITEV = 296,
       NR_PREADV2 = 327, NR_PWRITEV2 = 328 };

/* A shared mapping of a range of a host file. Mapping afresh at every open
 * costs a fault per page on first touch (dd opens the device each run):
 * a mapping stays cached for its owner (the service) until the owner is
 * forgotten (umvu_window_forget, at its unmount). */
struct mapping {
    dev_t dev;
    ino_t ino;
    unsigned long long offset, size;
    int writable;
    long owner;
    int refs;                       /* windows using it */
    char *map;                      /* map + skew is byte 0 of the range */
    size_t len, skew;
};

struct window {
    int fd;                         /* our own description of the host file */
    unsigned long long offset, size;
    long long pos;                  /* the open file's offset, in the window */
    int flags;                      /* UMVU_WIN_* */
    struct mapping *m;              /* the range mapped, or NULL */
};

#define MAX_MAPPINGS 64

static pthread_mutex_t win_lock = PTHREAD_MUTEX_INITIALIZER;
static struct window *windows[MAX_WINDOWS];
static struct mapping *mappings[MAX_MAPPINGS];

static void unmap(int i)
{
    munmap(mappings[i]->map, mappings[i]->len);
    free(mappings[i]);
    mappings[i] = NULL;
}

/* A cached mapping of the window's range, or a new one; NULL when the file
 * cannot be mapped. Called with win_lock held. */
static struct mapping *map_window(const struct window *w, long owner)
{
    struct stat st;
    long page = sysconf(_SC_PAGESIZE);
    int writable = (w->flags & UMVU_WIN_WRITE) != 0;
    /* a file shorter than the window cannot be mapped whole (a touch past
     * its end is SIGBUS): such windows go through pread/pwrite */
    if (w->size == 0 || fstat(w->fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (unsigned long long)st.st_size < w->offset + w->size)
        return NULL;
    int free_slot = -1, unused = -1;
    for (int i = 0; i < MAX_MAPPINGS; i++) {
        struct mapping *m = mappings[i];
        if (!m) {
            free_slot = free_slot < 0 ? i : free_slot;
            continue;
        }
        if (m->dev == st.st_dev && m->ino == st.st_ino && m->offset == w->offset &&
            m->size == w->size && m->writable >= writable && m->owner == owner) {
            m->refs++;
            return m;
        }
        if (m->refs == 0)
            unused = i;
    }
    if (free_slot < 0 && unused >= 0) {
        unmap(unused);
        free_slot = unused;
    }
    if (free_slot < 0)
        return NULL;
    struct mapping *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->skew = (size_t)(w->offset % (unsigned long long)page);
    m->len = m->skew + (size_t)w->size;
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void *addr = mmap(NULL, m->len, prot, MAP_SHARED, w->fd,
                      (off_t)(w->offset - m->skew));
    if (addr == MAP_FAILED) {
        free(m);
        return NULL;
    }
    m->map = addr;
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    m->offset = w->offset;
    m->size = w->size;
    m->writable = writable;
    m->owner = owner;
    m->refs = 1;
    mappings[free_slot] = m;
    return m;
}

void umvu_window_forget(long owner)
{
    pthread_mutex_lock(&win_lock);
    for (int i = 0; i < MAX_MAPPINGS; i++)
        if (mappings[i] && mappings[i]->owner == owner) {
            if (mappings[i]->refs == 0)
                unmap(i);
            else
                mappings[i]->owner = 0;     /* unmapped once unused */
        }
    pthread_mutex_unlock(&win_lock);
}

int umvu_window_open(int fd, unsigned long long offset, unsigned long long size,
                     int flags, long owner)
{
    if (offset > LLONG_MAX || size > LLONG_MAX - offset)
        return -EINVAL;
    struct window *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    /* a description of our own: the caller's position is never moved */
    int acc = (flags & UMVU_WIN_WRITE) ? O_RDWR : O_RDONLY;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    w->fd = open(path, acc | O_CLOEXEC);
    if (w->fd < 0)
        w->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (w->fd < 0) {
        free(w);
        return -errno;
    }
    w->offset = offset;
    w->size = size;
    w->flags = flags;
    pthread_mutex_lock(&win_lock);
    w->m = owner ? map_window(w, owner) : NULL;
    int id = -ENFILE;
    for (int i = 0; i < MAX_WINDOWS; i++)
        if (!windows[i]) {
            windows[i] = w;
            id = i + 1;
            break;
        }
    if (id < 0 && w->m)
        w->m->refs--;
    pthread_mutex_unlock(&win_lock);
    if (id < 0) {
        close(w->fd);
        free(w);
    }
    return id;
}

static struct window *get(int id)
{
    return id > 0 && id <= MAX_WINDOWS ? windows[id - 1] : NULL;
}

void umvu_window_close(int id)
{
    pthread_mutex_lock(&win_lock);
    struct window *w = get(id);
    if (w) {
        windows[id - 1] = NULL;
        if (w->m && --w->m->refs == 0 && w->m->owner == 0)
            for (int i = 0; i < MAX_MAPPINGS; i++)
                if (mappings[i] == w->m)
                    unmap(i);
    }
    pthread_mutex_unlock(&win_lock);
    if (!w)
        return;
    close(w->fd);
    free(w);
}

int umvu_window_set_flags(int id, int flags)
{
    pthread_mutex_lock(&win_lock);
    struct window *w = get(id);
    if (w)                          /* the access mode stays the open's */
        w->flags = (w->flags & (UMVU_WIN_READ | UMVU_WIN_WRITE)) |
                   (flags & UMVU_WIN_RDONLY);
    pthread_mutex_unlock(&win_lock);
    return w ? 0 : -EBADF;
}

long long umvu_window_pos(int id, long long pos)
{
    pthread_mutex_lock(&win_lock);
    struct window *w = get(id);
    long long r = -EBADF;
    if (w) {
        if (pos >= 0)
            w->pos = pos;
        r = w->pos;
    }
    pthread_mutex_unlock(&win_lock);
    return r;
}

/* The tracee's buffers to (write) or from our buffer: process_vm_*, or
 * tracee.c's access per buffer where a sandbox refuses those (ENOSYS,
 * EPERM). The bytes moved, or -errno. */
static long remote_copy(int tid, char *buf, size_t len, const struct iovec *remote,
                        unsigned long nremote, int write)
{
    struct iovec local = { buf, len };
    long r = write ? process_vm_readv(tid, &local, 1, remote, nremote, 0)
                   : process_vm_writev(tid, &local, 1, remote, nremote, 0);
    if (r >= 0 || (errno != ENOSYS && errno != EPERM))
        return r >= 0 ? r : -errno;
    size_t done = 0;
    for (unsigned long i = 0; i < nremote && done < len; i++) {
        size_t n = remote[i].iov_len < len - done ? remote[i].iov_len : len - done;
        long got = write ? umvu_read(tid, (unsigned long)remote[i].iov_base, buf + done, n)
                         : umvu_write(tid, (unsigned long)remote[i].iov_base, buf + done, n);
        if (got < 0)
            return done ? (long)done : got;
        done += (size_t)got;
        if ((size_t)got < n)
            break;
    }
    return (long)done;
}

/* Through a buffer: `len` bytes at window offset `off` to (or from, with
 * `write`) the tracee's buffers. Bytes past the host file's end read as
 * zeros (a sparse or cut image). */
static long via_buffer(struct window *w, int tid, const struct iovec *remote,
                       unsigned long nremote, unsigned long long off, size_t len,
                       int write)
{
    if (len > MAX_IO)
        len = MAX_IO;               /* a short count, as read(2) may give */
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    long r;
    if (write) {
        r = remote_copy(tid, buf, len, remote, nremote, 1);
        size_t done = 0;
        while (r > 0 && done < (size_t)r) {
            ssize_t n = pwrite(w->fd, buf + done, (size_t)r - done,
                               (off_t)(w->offset + off + done));
            if (n < 0) {
                r = done ? (long)done : -errno;
                break;
            }
            done += (size_t)n;
        }
    } else {
        size_t got = 0;
        while (got < len) {
            ssize_t n = pread(w->fd, buf + got, len - got, (off_t)(w->offset + off + got));
            if (n < 0) {
                free(buf);
                return -errno;
            }
            if (n == 0)
                break;
            got += (size_t)n;
        }
        memset(buf + got, 0, len - got);
        r = remote_copy(tid, buf, len, remote, nremote, 0);
    }
    free(buf);
    return r;
}

static long transfer(struct window *w, int tid, const struct iovec *remote,
                     unsigned long nremote, unsigned long long off, size_t len,
                     int write)
{
    if (len == 0)
        return 0;
    if (w->m) {
        struct iovec local = { w->m->map + w->m->skew + off, len };
        long r = write ? process_vm_readv(tid, &local, 1, remote, nremote, 0)
                       : process_vm_writev(tid, &local, 1, remote, nremote, 0);
        if (r > 0)
            return r;
        /* EFAULT may be the mapping's (the file shrank): the buffer tells */
    }
    return via_buffer(w, tid, remote, nremote, off, len, write);
}

/* The length a call at `off` may move: the window's end bounds it. */
static size_t clamp(const struct window *w, unsigned long long off, unsigned long long want)
{
    unsigned long long left = off < w->size ? w->size - off : 0;
    if (want > left)
        want = left;
    unsigned long most = w->m ? MAX_RW : MAX_IO;
    return want > most ? most : (size_t)want;
}

static long io(struct window *w, int tid, const struct iovec *remote,
               unsigned long nremote, unsigned long long total, long long at,
               int write)
{
    int positional = at >= 0;
    unsigned long long off = positional ? (unsigned long long)at
                                        : (unsigned long long)w->pos;
    if (!(w->flags & (write ? UMVU_WIN_WRITE : UMVU_WIN_READ)))
        return -EBADF;
    if (write && (w->flags & UMVU_WIN_RDONLY))
        return -EPERM;
    if (total == 0)
        return 0;
    if (write && off >= w->size)
        return -ENOSPC;
    long r = transfer(w, tid, remote, nremote, off, clamp(w, off, total), write);
    if (r > 0 && !positional)
        w->pos += r;
    return r;
}

/* The tracee's iovec array; its total length, or -errno. */
static long long read_iov(int tid, unsigned long addr, unsigned long count,
                          struct iovec *out)
{
    if (count > MAX_IOV)
        return -EINVAL;
    if (count && umvu_read(tid, addr, out, count * sizeof *out) !=
                 (long)(count * sizeof *out))
        return -EFAULT;
    unsigned long long total = 0;
    for (unsigned long i = 0; i < count; i++) {
        total += out[i].iov_len;
        if (total > (unsigned long long)SSIZE_MAX)
            return -EINVAL;
    }
    return (long long)total;
}

/* As a block device's lseek (fixed_size_llseek): no position past the end. */
static long seek(struct window *w, long long offset, unsigned whence)
{
    long long size = (long long)w->size, pos;
    switch (whence) {
    case SEEK_SET: pos = offset; break;
    case SEEK_CUR:
        if (__builtin_add_overflow(w->pos, offset, &pos))
            return -EINVAL;
        break;
    case SEEK_END:
        if (__builtin_add_overflow(size, offset, &pos))
            return -EINVAL;
        break;
    case SEEK_DATA:
    case SEEK_HOLE:
        if ((unsigned long long)offset >= (unsigned long long)size)
            return -ENXIO;
        pos = whence == SEEK_DATA ? offset : size;
        break;
    default:
        return -EINVAL;
    }
    if (pos < 0 || pos > size)
        return -EINVAL;
    w->pos = pos;
    return pos;
}

static long call(struct window *w, int tid, long nr, const unsigned long *a)
{
    struct iovec one, iov[MAX_IOV];
    long long total, at = -1;
    switch (nr) {
    case NR_READ: case NR_WRITE: case NR_PREAD64: case NR_PWRITE64:
        one.iov_base = (void *)a[1];
        one.iov_len = (size_t)a[2];
        if (nr == NR_PREAD64 || nr == NR_PWRITE64) {
            at = (long long)a[3];
            if (at < 0)
                return -EINVAL;
        }
        if (a[2] > (unsigned long)SSIZE_MAX)
            return -EINVAL;
        return io(w, tid, &one, 1, a[2], at, nr == NR_WRITE || nr == NR_PWRITE64);
    case NR_READV: case NR_WRITEV: case NR_PREADV: case NR_PWRITEV:
    case NR_PREADV2: case NR_PWRITEV2:
        total = read_iov(tid, a[1], a[2], iov);
        if (total < 0)
            return (long)total;
        if (nr != NR_READV && nr != NR_WRITEV) {
            at = (long long)a[3];   /* pos_l; x86_64 passes it whole */
            if (at == -1 && (nr == NR_PREADV2 || nr == NR_PWRITEV2))
                at = -1;            /* v2 with -1: the file's offset */
            else if (at < 0)
                return -EINVAL;
        }
        return io(w, tid, iov, a[2], (unsigned long long)total, at,
                  nr == NR_WRITEV || nr == NR_PWRITEV || nr == NR_PWRITEV2);
    case NR_LSEEK:
        return seek(w, (long long)a[1], (unsigned)a[2]);
    }
    return -ENOSYS;
}

int umvu_window_handles(long nr)
{
    switch (nr) {
    case NR_READ: case NR_WRITE: case NR_PREAD64: case NR_PWRITE64:
    case NR_READV: case NR_WRITEV: case NR_PREADV: case NR_PWRITEV:
    case NR_PREADV2: case NR_PWRITEV2: case NR_LSEEK:
        return 1;
    }
    return 0;
}

long umvu_window_call(int id, int tid, long nr, const unsigned long *args)
{
    if (!umvu_window_handles(nr))
        return -ENOSYS;
    pthread_mutex_lock(&win_lock);
    struct window *w = get(id);
    long r = w ? call(w, tid, nr, args) : -EBADF;
    pthread_mutex_unlock(&win_lock);
    return r;
}
