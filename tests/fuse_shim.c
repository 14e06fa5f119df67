/*
 * LD_PRELOAD shim used only by tests/test_vufuse_wire.py.
 *
 * It lets an unmodified libfuse-2 daemon (fuse2fs) run without the fuse
 * kernel module: opening "/dev/fuse" yields the descriptor whose number is
 * in $FUSE_SHIM_FD (one end of a SOCK_SEQPACKET socketpair held by the
 * test), and mount(2), umount(2) and umount2(2) pretend to succeed.
 * Nothing else is changed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/types.h>

static int shim_fd(const char *path)
{
	const char *s;

	if (path == NULL || strcmp(path, "/dev/fuse") != 0)
		return -1;
	s = getenv("FUSE_SHIM_FD");
	if (s == NULL || *s == '\0')
		return -1;
	return atoi(s);
}

#define OPEN_WRAPPER(fname)                                              \
	int fname(const char *path, int flags, ...)                      \
	{                                                                \
		static int (*real)(const char *, int, ...);              \
		mode_t mode = 0;                                         \
		int fd = shim_fd(path);                                  \
		if (fd >= 0)                                             \
			return fd;                                       \
		if (flags & (O_CREAT | O_TMPFILE)) {                     \
			va_list ap;                                      \
			va_start(ap, flags);                             \
			mode = va_arg(ap, mode_t);                       \
			va_end(ap);                                      \
		}                                                        \
		if (real == NULL)                                        \
			real = dlsym(RTLD_NEXT, #fname);                 \
		return real(path, flags, mode);                          \
	}

OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(fname)                                            \
	int fname(int dirfd, const char *path, int flags, ...)           \
	{                                                                \
		static int (*real)(int, const char *, int, ...);         \
		mode_t mode = 0;                                         \
		int fd = shim_fd(path);                                  \
		if (fd >= 0)                                             \
			return fd;                                       \
		if (flags & (O_CREAT | O_TMPFILE)) {                     \
			va_list ap;                                      \
			va_start(ap, flags);                             \
			mode = va_arg(ap, mode_t);                       \
			va_end(ap);                                      \
		}                                                        \
		if (real == NULL)                                        \
			real = dlsym(RTLD_NEXT, #fname);                 \
		return real(dirfd, path, flags, mode);                   \
	}

OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

#define OPEN2_WRAPPER(fname)                                             \
	int fname(const char *path, int flags)                           \
	{                                                                \
		static int (*real)(const char *, int);                   \
		int fd = shim_fd(path);                                  \
		if (fd >= 0)                                             \
			return fd;                                       \
		if (real == NULL)                                        \
			real = dlsym(RTLD_NEXT, #fname);                 \
		return real(path, flags);                                \
	}

OPEN2_WRAPPER(__open_2)
OPEN2_WRAPPER(__open64_2)

int mount(const char *source, const char *target, const char *fstype,
	  unsigned long flags, const void *data)
{
	(void)source; (void)target; (void)fstype; (void)flags; (void)data;
	return 0;
}

int umount(const char *target)
{
	(void)target;
	return 0;
}

int umount2(const char *target, int flags)
{
	(void)target; (void)flags;
	return 0;
}
