"""vunetvdestack: a stack that is a network namespace of its own (Debian's
libvdestack: a user namespace, so no privilege is needed) whose interface
vde0 is plugged into a VDE network (libvdeplug: vde://, vxvde://, slirp://,
switch://, tap://, null://...).

libvdestack runs the namespace's helper as a clone of the calling process
(CLONE_VM | CLONE_FILES: it shares the hypervisor's memory and descriptor
table) that copies frames between the tap interface vde0 and the VDE
connection, and makes sockets in the namespace on request. Here:

- each stack is started by a keeper thread of its own, which stays parked
  while the helper lives: the helper runs on the keeper's thread-local
  storage (errno...), so no busy thread of the hypervisor shares it;
- requests (a socket, a command) speak libvdestack's protocol on its
  command socket directly, with a timeout and an eye on the helper's pidfd,
  so a dead helper is an error, never a hang;
- unmount closes the command socket (the helper ends), then closes what the
  helper leaves behind in the shared table: the tap descriptor and the VDE
  connection (vde_close).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import threading

from .stack import IP_FAMILIES, StackService

IFNAME = b"vde0"
CHILD_STACK_SIZE = 256 * 1024
TIMEOUT = 5.0
_ffi = None
_lib = _plug = _libc = None
_init_lock = threading.Lock()
#: vde_addstack calls are serialized: the new tap descriptor is found as
#: the one that was not there before
_start_lock = threading.Lock()

CDEF = """
typedef struct vdeconn VDECONN;
struct vdestack {
    int pid;
    union { long align; char bytes[40]; } mutex;    /* pthread_mutex_t */
    int cmdpipe[2];
    int cmdpid;
    int sfd;
    int parentpid;
    int conntype;
    union { VDECONN *vdeconn; int streamfd[2]; } conn;
    char *child_stack;
    char ifname[];
};
struct vdecmd { char **argv; int domain; int type; int protocol; };
struct vdestack *vde_addstack(char *vdenet, char *ifname);
int socket(int domain, int type, int protocol);
int vde_close(VDECONN *conn);
void free(void *ptr);
int munmap(void *addr, size_t length);
"""


def _load():
    """libvdestack, libvdeplug and libc through cffi (ABI mode)."""
    global _ffi, _lib, _plug, _libc
    with _init_lock:
        if _lib is None:
            try:
                import cffi
            except ImportError as exc:
                raise OSError(errno.ENOSYS, f"vunetvdestack needs cffi: {exc}")
            ffi = cffi.FFI()
            ffi.cdef(CDEF)
            try:
                lib = ffi.dlopen("libvdestack.so.0")
                plug = ffi.dlopen("libvdeplug.so.2")
            except OSError as exc:
                raise OSError(errno.ENOSYS, "vunetvdestack needs libvdestack0 and "
                              f"libvdeplug2 (Debian packages): {exc}")
            # libvdestack's helper finds libc's socket() with dlsym the
            # first time it makes one: do it here, in a thread of ours, so
            # the helper never enters the dynamic loader
            fd = lib.socket(socket.AF_UNIX, socket.SOCK_DGRAM, 0)
            if fd >= 0:
                os.close(fd)
            _ffi, _lib, _plug, _libc = ffi, lib, plug, ffi.dlopen(None)
    return _ffi, _lib


def _map_ids(pid: int) -> None:
    """The helper's uid and gid maps (ours, one to one), which libvdestack
    fails to write when the hypervisor is not dumpable (umvu keeps itself
    out of its tracees' reach): its /proc files then belong to root. The
    hypervisor is dumpable only for these three writes. Without the maps
    the stack still works, but ICMP datagram sockets cannot be allowed."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
    try:
        with open(f"/proc/{pid}/gid_map") as f:
            if f.read().strip():
                return              # libvdestack could write them
    except OSError:
        return
    was = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        for name, text in (("uid_map", f"{os.geteuid()} {os.geteuid()} 1"),
                           ("setgroups", "deny"),
                           ("gid_map", f"{os.getegid()} {os.getegid()} 1")):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError:
                pass
    finally:
        libc.prctl(PR_SET_DUMPABLE, was, 0, 0, 0)


def _tun_fds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/net/tun":
                found.add(int(name))
        except OSError:
            pass
    return found


class StackError(OSError):
    pass


class VdeStack(StackService):
    """One libvdestack namespace, plugged into request.source."""

    kind = "vdestack"
    families = IP_FAMILIES

    def __init__(self, module, request):
        super().__init__(module, request)
        self.url = request.source
        self.stack = None
        self.pid = 0
        self.pidfd = -1
        self.cmdfd = -1
        self.tapfd = -1
        self.lock = threading.Lock()    # one request at a time
        self.keeper: threading.Thread | None = None
        self._gone = threading.Event()  # the helper has ended
        self._stopping = False
        self.killed = False
        self._ioctl_fd = -1

    # ---- start -----------------------------------------------------------
    def start(self) -> None:
        """Create the namespace (from a keeper thread) and set it up."""
        ffi, lib = _load()
        ready = threading.Event()
        outcome: list = []

        def keeper():
            try:
                self._create(ffi, lib)
            except BaseException as exc:    # handed to start()
                outcome.append(exc)
                ready.set()
                return
            ready.set()
            self._park()

        with _start_lock:
            self.keeper = threading.Thread(target=keeper, daemon=True,
                                           name=f"vdestack {self.target}")
            self.keeper.start()
            ready.wait()
            if outcome:
                raise outcome[0]
            try:
                # the first request proves the helper is up and its tap open
                os.close(self.new_socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
            except OSError as exc:
                self.stop()
                raise StackError(exc.errno, self._why(exc)) from None
            new = _tun_fds() - self._tun_before
            if len(new) == 1:
                self.tapfd = new.pop()
        try:
            self._setup()
        except OSError as exc:
            self.module.ctx.log.warning("vunet %s: set-up: %s", self.target, exc)

    def _why(self, exc: OSError) -> str:
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            return (f"{self.fstype}: cannot create vde0: /dev/net/tun is not "
                    "readable and writable by this user (Debian gives it mode "
                    "0666: chmod 666 /dev/net/tun)")
        if exc.errno == errno.EPIPE or isinstance(exc, StackError):
            return (f"{self.fstype}: the network namespace helper failed "
                    "(user namespaces or /dev/net/tun unavailable?)")
        return f"{self.fstype}: the network namespace helper: {exc.strerror}"

    def _create(self, ffi, lib) -> None:
        self._tun_before = _tun_fds()
        ffi.errno = 0
        stack = lib.vde_addstack(os.fsencode(self.url), IFNAME)
        if stack == ffi.NULL:
            err = ffi.errno or errno.EINVAL
            raise StackError(err, f"{self.fstype}: cannot open the VDE network "
                             f"{self.url!r}: {os.strerror(err)}")
        try:
            pidfd = os.pidfd_open(stack.pid)
        except OSError:             # it ended already (and was reaped)
            raise StackError(errno.EPIPE, self._why(StackError(errno.EPIPE, ""))) from None
        # libvdestack keeps its state in a struct of its own: check it is
        # the layout we read (Debian's 0.1.2: a mutex after the pid) before
        # trusting any field
        if (stack.parentpid != os.getpid() or stack.conntype != 1
                or ffi.string(stack.ifname) != IFNAME):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], 2.0)
            os.close(pidfd)
            raise StackError(errno.ENOSYS, f"{self.fstype}: this libvdestack is "
                             "not the one vunet knows (struct vdestack differs)")
        self.stack = stack
        self.pid = stack.pid
        self.cmdfd = stack.cmdpipe[0]
        self.pidfd = pidfd
        _map_ids(self.pid)

    def _park(self) -> None:
        """The keeper waits for the helper to end, then cleans up."""
        while True:
            try:
                r, _, _ = select.select([self.pidfd], [], [])
            except OSError:         # EINTR, or errno clobbered by the helper
                continue
            if r:
                break
        self._gone.set()
        self._cleanup()

    def _setup(self) -> None:
        """lo up, and ICMP datagram sockets (ping) allowed to the helper's
        group, whose sockets these are (a new namespace allows none)."""
        gid = os.getegid()
        script = (f"ip link set lo up; "
                  f"/bin/echo {gid} {gid} > /proc/sys/net/ipv4/ping_group_range")
        status = self.command(["/bin/sh", "-c",
                               "PATH=/usr/sbin:/usr/bin:/sbin:/bin; " + script])
        if status != 0:
            raise OSError(errno.EIO, f"set-up script exited with {status}")

    # ---- requests ----------------------------------------------------------
    def _exchange(self, cmd: bytes) -> tuple[int, int]:
        if not self.alive or self._gone.is_set():
            raise OSError(errno.ENETDOWN, "the stack was unmounted")
        with self.lock:
            try:
                os.write(self.cmdfd, cmd)
            except OSError as exc:
                raise OSError(errno.ENETDOWN, f"stack helper: {exc.strerror}")
            poller = select.poll()
            poller.register(self.cmdfd, select.POLLIN)
            poller.register(self.pidfd, select.POLLIN)
            events = dict(poller.poll(TIMEOUT * 1000))
            if self.cmdfd not in events:
                raise OSError(errno.ENETDOWN if events else errno.ETIMEDOUT,
                              "the stack's helper does not answer")
            reply = os.read(self.cmdfd, 8)
        if len(reply) != 8:
            raise OSError(errno.ENETDOWN, "the stack's helper ended")
        return struct.unpack("ii", reply)

    def new_socket(self, domain: int, type_: int, protocol: int) -> int:
        """A socket in the namespace, as a descriptor of ours."""
        rval, err = self._exchange(struct.pack("Qiii4x", 0, domain, type_, protocol))
        if rval < 0:
            raise OSError(err, os.strerror(err))
        return rval

    def command(self, argv: list[str]) -> int:
        """Run a program in the namespace (with its network capabilities);
        its exit status."""
        ffi = _ffi
        keep = [ffi.new("char[]", os.fsencode(a)) for a in argv]
        cargv = ffi.new("char *[]", keep + [ffi.NULL])
        address = int(ffi.cast("unsigned long", cargv))
        rval, _ = self._exchange(struct.pack("Qiii4x", address, 0, 0, 0))
        del keep, cargv
        return rval

    def socket(self, domain, type_, protocol):
        return self.new_socket(domain, type_, protocol)

    def ioctl_fd(self):
        if self._ioctl_fd < 0:
            self._ioctl_fd = self.new_socket(socket.AF_INET,
                                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        return self._ioctl_fd

    # ---- stop --------------------------------------------------------------
    def stop(self) -> None:
        """The helper ends (its command socket closes), then what it leaves
        in the shared descriptor table is closed."""
        super().stop()
        if self._stopping:
            return
        self._stopping = True
        if self.stack is None or self.pidfd < 0:
            return
        with self.lock:
            fd, self.cmdfd = self.cmdfd, -1
            if fd >= 0:
                os.close(fd)        # the helper reads EOF and ends
            if self._ioctl_fd >= 0:
                os.close(self._ioctl_fd)
                self._ioctl_fd = -1
        if not self._gone.wait(2.0):
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                self.killed = True
            except OSError:
                pass
            self._gone.wait(2.0)
        if self.keeper is not None:
            self.keeper.join(2.0)

    def _cleanup(self) -> None:
        """On the keeper thread, once the helper has ended."""
        if self.tapfd >= 0:
            os.close(self.tapfd)     # vde0 and the namespace go
            self.tapfd = -1
        stack = self.stack
        if stack is not None:
            if _plug is not None and stack.conn.vdeconn != _ffi.NULL:
                _plug.vde_close(stack.conn.vdeconn)
            if not self.killed:      # else its own two may still be open
                # Debian's 0.1.2 maps the helper's stack (256 KiB) and
                # mallocs the struct
                _libc.munmap(stack.child_stack, CHILD_STACK_SIZE)
                _libc.free(stack)
            self.stack = None
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
