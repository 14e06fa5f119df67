/* umvu C core: a stopped thread's registers and memory (see core.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/uio.h>

#include "core.h"

long umvu_ptrace(int req, int tid, unsigned long addr, unsigned long data)
{
    errno = 0;
    long r = ptrace(req, tid, (void *)addr, (void *)data);
    if (r == -1 && errno)
        return -errno;
    return r;
}

int umvu_getregs(int tid, struct umvu_regs *regs)
{
    return ptrace(PTRACE_GETREGS, tid, 0, regs) < 0 ? -errno : 0;
}

int umvu_setregs(int tid, const struct umvu_regs *regs)
{
    return ptrace(PTRACE_SETREGS, tid, 0, (void *)regs) < 0 ? -errno : 0;
}

/* At a seccomp stop: skip the call and make it return `result`. */
int umvu_set_result(int tid, long result)
{
    struct umvu_regs regs;
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0)
        return -errno;
    regs.orig_rax = (unsigned long)-1;
    regs.rax = (unsigned long)result;
    return ptrace(PTRACE_SETREGS, tid, 0, &regs) < 0 ? -errno : 0;
}

static long mem_fallback(int tid, unsigned long addr, void *buf,
                         unsigned long len, int write)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", tid);
    int fd = open(path, write ? O_WRONLY : O_RDONLY);
    if (fd < 0)
        return -errno;
    long r = write ? pwrite(fd, buf, len, (off_t)addr)
                   : pread(fd, buf, len, (off_t)addr);
    if (r < 0)
        /* an unmapped address (EIO), or one in the kernel half (an offset
         * past off_t: EINVAL): the kernel would say EFAULT */
        r = (errno == EIO || errno == EINVAL) ? -EFAULT : -errno;
    close(fd);
    return r;
}

/* process_vm_readv/writev honour the tracee's page protections, as the
 * kernel's own copies do: a PROT_NONE or read-only page is EFAULT, never
 * written through (/proc/PID/mem would). The /proc fallback is only for
 * kernels or sandboxes without process_vm_* (ENOSYS, EPERM). */
static int no_process_vm(int err)
{
    return err == ENOSYS || err == EPERM;
}

long umvu_read(int tid, unsigned long addr, void *buf, unsigned long len)
{
    struct iovec local = { buf, len }, remote = { (void *)addr, len };
    long r = process_vm_readv(tid, &local, 1, &remote, 1, 0);
    if (r >= 0)
        return r;
    return no_process_vm(errno) ? mem_fallback(tid, addr, buf, len, 0) : -errno;
}

long umvu_write(int tid, unsigned long addr, const void *buf, unsigned long len)
{
    struct iovec local = { (void *)buf, len }, remote = { (void *)addr, len };
    long r = process_vm_writev(tid, &local, 1, &remote, 1, 0);
    if (r == (long)len)
        return r;
    if (r >= 0)
        return -EFAULT;             /* ran into a page it may not write */
    return no_process_vm(errno) ? mem_fallback(tid, addr, (void *)buf, len, 1)
                                : -errno;
}

/* Read a NUL-terminated string, page by page so that a string ending just
 * before an unmapped page is still read. Returns its length, or -errno;
 * -EFAULT when memory ends before the NUL (as the kernel's copy would),
 * -ENAMETOOLONG when no NUL is found within max bytes. */
long umvu_read_str(int tid, unsigned long addr, char *buf, unsigned long max)
{
    unsigned long done = 0;
    while (done < max) {
        unsigned long chunk = 4096 - ((addr + done) & 4095);
        if (chunk > max - done)
            chunk = max - done;
        long r = umvu_read(tid, addr + done, buf + done, chunk);
        if (r <= 0)
            return -EFAULT;
        char *nul = memchr(buf + done, 0, (size_t)r);
        if (nul)
            return nul - buf;
        done += (unsigned long)r;
    }
    return -ENAMETOOLONG;
}
