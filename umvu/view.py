"""The view: loaded modules, mounted services, and the dispatch of every
trapped call to the control path, the mount table or a module handler.

This is the one place that knows both the tracer (below) and the modules
(above); modules see it only through umvu.module.Call and the few public
methods marked for them here.
"""

from __future__ import annotations

import errno
import os

import contextlib
import signal
import stat
import struct
import threading
import time

from . import abi32, control, creds, linux, logs, procinfo, seccomp_filter, syscall_table
from .module import (Call, Caller, Module, MountRequest, PathService, Service,
                     NOBODY, ServiceContext, WouldBlock, _answer_ids, _serve_for)
from .servicetable import ServiceTable, path_under
from .tracer import DEFER, Tracer, signed

log = logs.getLogger("umvu")     # logging itself: when first needed (start-up)
NR_MOUNT = syscall_table.NR["mount"]
NR_UMOUNT2 = syscall_table.NR["umount2"]
#: calls that change a process's credentials: a root hypervisor traps them
#: so that it may remember whose rights its file work borrows (creds)
CRED_CHANGERS = ("setuid", "setgid", "setreuid", "setregid", "setresuid",
                 "setresgid", "setfsuid", "setfsgid", "setgroups", "capset")
CRED_NRS = frozenset(syscall_table.NR[n] for n in CRED_CHANGERS)
#: calls that would let a process see past the mounts (a namespace of its
#: own, an io_uring ring, the new mount API): refused while one exists
GUARDED = ("unshare", "setns", "clone", "clone3", "io_uring_enter",
           "io_uring_register", "open_tree", "open_tree_attr", "move_mount",
           "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr")
GUARDED_NRS = frozenset(syscall_table.NR[n] for n in GUARDED)
NAMESPACE_FLAGS = linux.CLONE_NEWUSER | linux.CLONE_NEWNS
#: control calls a module may handle: msocket, and vuctl tags the view
#: does not know
_CONTROL_HANDLERS = {"msocket": control.MSOCKET, "vuctl": control.VUCTL}
from .linux import MNT_DETACH, MNT_FORCE, UMOUNT_NOFOLLOW  # noqa: E402


class View:
    def __init__(self, name: str = ""):
        self.name = name
        self.lock = threading.Lock()
        self._working = 0
        self.tracer = Tracer(self, lock=self.lock,
                             busy_workers=lambda: self._working > 0)
        self.modules: dict[str, Module] = {}     # load order
        self.permanent: set[str] = set()
        self.services = ServiceTable()
        self.handlers: dict[int, list] = {}      # nr -> [(module, method)], newest first
        self.debug_tags: set[str] = set()
        self._pool = None                        # worker threads, made on demand
        self.shutting_down = False
        self.env: dict = dict(os.environ)        # for processes the view starts
        self.child_signals: list = []
        self._tmpdir: str | None = None
        self.vfs = None         # the file system layer, from the first module on
        #: where helpers' (FUSE daemons') output goes: umvu's log file,
        #: stderr with -d, else nowhere (fusefat alone prints thousands of lines)
        self.helper_output: int | None = None
        _answer_ids(self.view_ids)          # Caller.view_ids

    def _file_system_layer(self) -> None:
        """Made at the first vu_insmod: a view that loads nothing needs no
        VFS (nor the start-up time of its imports)."""
        if self.vfs is None:
            logs.ensure()           # modules log through logging itself
            from .vfs import Vfs
            from .vfs.procfs import ProcMounts
            self.vfs = Vfs(self)
            self.services.add(ProcMounts(self))

    # ---- public to modules -------------------------------------------------
    @property
    def tmpdir(self) -> str:
        """The view's own directory (placeholders, sockets), made when first
        needed: a view that loads nothing leaves nothing behind."""
        if self._tmpdir is None:
            _remove_orphaned_tmpdirs()
            import tempfile
            self._tmpdir = tempfile.mkdtemp(prefix=f"umvu-{os.getpid()}-")
            if os.geteuid() == 0:
                # processes of other users reach their placeholders by name
                # (the names are not listed; each file is theirs, see vfs)
                os.chmod(self._tmpdir, 0o711)
        return self._tmpdir

    def _own(self, path: str) -> bool:
        return self._tmpdir is not None and path_under(path, self._tmpdir)

    def process_state(self, proc, module: Module):
        if module.name not in proc.data:
            proc.data[module.name] = module.new_state(proc.pid)
        return proc.data[module.name]

    def resolve_for(self, pid: int, path: str, follow: bool = True) -> str:
        """ServiceContext.resolve: the process is named by its pid."""
        proc = self.tracer.processes.get(pid)
        if proc is None:
            if path.startswith("/"):
                return self.resolve_host(path, follow)
            raise OSError(3, "no such process")     # ESRCH
        return self.resolve(proc, path, follow)

    def resolve_host(self, path: str, follow: bool = True) -> str:
        res = self.vfs.walker.resolve(path, "/", "/", follow, os.getpid())
        if res.error:
            raise OSError(res.error, os.strerror(res.error), path)
        return res.path

    def resolve(self, proc, path: str, follow: bool = True) -> str:
        """Canonical path in the view of a path given by a process."""
        pfs = self.vfs.state(proc)
        res = self.vfs.walker.resolve(path, pfs.fs.cwd, pfs.fs.root, follow, proc.pid)
        if res.error:
            raise OSError(res.error, os.strerror(res.error), path)
        return res.path

    def bypass_vdso(self, owner, on: bool) -> None:
        """ServiceContext.bypass_vdso: see umvu.vdso."""
        if threading.current_thread() is not threading.main_thread():
            return self.on_tracer_thread(self.bypass_vdso, owner, on)
        from .vdso import VdsoBypass
        if getattr(self, "_vdso", None) is None:
            self._vdso, self._vdso_owners = VdsoBypass(self.tracer), set()
        (self._vdso_owners.add if on else self._vdso_owners.discard)(owner)
        if self._vdso_owners:
            self._vdso.enable()
        else:
            self._vdso.disable()

    def view_ids(self, pid: int, tid: int | None = None) -> "ViewIds | None":
        """Caller.view_ids, Call.effective_uid: the ids a process sees as
        its own. The newest module that handles the virtual calls
        getresfuid / getresfgid (and getgroups) answers them, as it answers
        the process's own get*id calls; what no module answers is the
        kernel's. None: no loaded module virtualizes ids (the kernel's are
        the view's; the caller reads them as it likes best)."""
        if not any(_id_handlers(type(m)) for m in self.modules.values()):
            return None
        uids = gids = groups = None
        proc = self.tracer.processes.get(pid) if pid else None
        if proc is not None:
            for module in reversed(list(self.modules.values())):
                marked = _id_handlers(type(module))
                if not marked:
                    continue
                stop = _IdsQuery(proc, tid or pid)
                if uids is None and "getresfuid" in marked:
                    uids = self._ask_ids(module, marked["getresfuid"], stop)
                if gids is None and "getresfgid" in marked:
                    gids = self._ask_ids(module, marked["getresfgid"], stop)
                if groups is None and "getgroups" in marked:
                    groups = self._ask_groups(module, marked["getgroups"], stop)
                if None not in (uids, gids, groups):
                    break
        if None in (uids, gids, groups):
            if not pid:
                real_u = (os.getuid(), os.geteuid(), os.geteuid(), os.geteuid())
                real_g = (os.getgid(), os.getegid(), os.getegid(), os.getegid())
                real_groups = os.getgroups()
            else:
                st = procinfo.fields(pid, "Uid", "Gid", "Groups")
                try:
                    real_u = tuple(int(x) for x in st["Uid"].split())
                    real_g = tuple(int(x) for x in st["Gid"].split())
                except (KeyError, ValueError):
                    real_u = real_g = (os.getuid(),) * 4
                real_groups = [int(g) for g in st.get("Groups", "").split()]
            uids = uids or real_u
            gids = gids or real_g
            groups = real_groups if groups is None else groups
        return ViewIds(tuple(uids), tuple(gids), list(groups))

    def _ask_ids(self, module: Module, attr: str, stop):
        call = Call(attr, stop, self, module)
        try:
            ids = getattr(module, attr)(call)
        except Exception:
            log.error("module %s failed in %s:\n%s", module.name, attr,
                      logs.format_exc().rstrip())
            return None
        if ids is None or isinstance(ids, int) or len(ids) != 4:
            return None
        return tuple(int(i) for i in ids)

    def _ask_groups(self, module: Module, attr: str, stop):
        call = Call("getgroups", stop, self, module)
        try:
            n = getattr(module, attr)(call)
        except Exception:
            log.error("module %s failed in getgroups:\n%s", module.name,
                      logs.format_exc().rstrip())
            return None
        if not isinstance(n, int) or n < 0:
            return None
        data = stop.memory[:4 * n]
        return list(struct.unpack(f"{n}I", data)) if n else []

    def effective_uid(self, stop) -> int:
        """Call.effective_uid: the effective uid of view_ids (one answer
        with Caller.view_ids, which fails closed: the hypervisor's uid)."""
        return Caller(stop.process.pid, stop.tid).view_ids(effective=True)[0]

    # ---- processes ---------------------------------------------------------
    def spawn(self, path, argv, env, default_signals):
        return self.tracer.spawn(path, argv, env, default_signals)

    def on_new_thread(self, proc, tid: int) -> None:
        self.vfs.on_new_thread(proc, tid)

    def on_new_process(self, parent, child, flags) -> None:
        self.vfs.on_new_process(parent, child, flags)
        for name, state in parent.data.items():
            module = self.modules.get(name)
            if module is not None:
                child.data[name] = module.fork_state(state, flags)

    def on_exec(self, proc) -> None:
        creds.forget_creds(proc.pid)
        self.vfs.on_exec(proc)
        for name in list(proc.data):
            module = self.modules.get(name)
            if module is not None:
                proc.data[name] = module.exec_state(proc.data[name])

    def on_exit(self, proc) -> None:
        creds.forget_creds(proc.pid)
        if self.vfs is not None:
            # what it held is released: served files written back, devices
            # no longer busy (a process that exits need not close)
            self.vfs.on_exit(proc)
        proc.data.clear()

    def on_tightened(self) -> None:
        """Some process traps more (descriptor calls): the C core needs
        the rows of those numbers to let their plain calls through."""
        self._update_fast(any("path" in m.families for m in self.modules.values()))

    def on_fd_event(self, process, kind: int, fd: int, other: int, flags: int,
                    path: str | None) -> None:
        """The C core changed a descriptor table (journaled)."""
        if self.vfs is not None:
            self.vfs.fds.journaled(process, kind, fd, other, flags, path)

    def on_replayed(self) -> None:
        if self.vfs is not None:
            self.vfs.feeder.flush()

    # ---- waiting: worker threads ------------------------------------------
    def may_wait(self) -> None:
        if threading.current_thread() is threading.main_thread() and \
                not self.shutting_down:
            raise WouldBlock()

    @contextlib.contextmanager
    def unlocked(self):
        """Wait without holding the view: the tracer serves other calls."""
        self.lock.release()
        try:
            yield
        finally:
            self.lock.acquire()

    def submit(self, func, *args):
        """Run func on a worker thread, holding the view while it runs."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(16, thread_name_prefix="umvu-worker")

        def locked():
            try:
                with self.lock:
                    return func(*args)
            finally:
                self._working -= 1
        self._working += 1
        return self._pool.submit(locked)

    def on_tracer_thread(self, func, *args):
        """From a worker: run func on the tracer's thread, wait for it."""
        with self.unlocked():
            result, error = self.tracer.call_soon(func, *args).get()
        if error is not None:
            raise error
        return result

    def start_helper(self, argv: list[str]):
        """Start a helper process of the view (e.g. a FUSE daemon): it sees
        the view but does not keep it alive."""
        import shutil as _shutil
        path = _shutil.which(argv[0], path=self.env.get("PATH"))
        if path is None:
            raise FileNotFoundError(argv[0])
        def spawn():
            # a helper reads nothing and writes to umvu's log: the view's
            # terminal belongs to the user's command
            saved = os.dup(0), os.dup(1), os.dup(2)
            null = os.open(os.devnull, os.O_RDWR)
            out = null if self.helper_output is None else self.helper_output
            try:
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                proc = self.tracer.spawn(path, argv, self.env, self.child_signals)
            finally:
                for fd, saved_fd in enumerate(saved):
                    os.dup2(saved_fd, fd)
                for fd in (*saved, null):
                    os.close(fd)
            proc.helper = True
            return proc
        if threading.current_thread() is threading.main_thread():
            return spawn()
        return self.on_tracer_thread(spawn)

    def stop_helper(self, proc, timeout: float) -> None:
        """Wait for a helper to end after its work is done; kill it if it
        will not. (At shutdown finish_helpers does the waiting.)"""
        if threading.current_thread() is threading.main_thread():
            return
        deadline = time.monotonic() + timeout
        with self.unlocked():
            while not self._has_exited(proc) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not self._has_exited(proc):
                _kill(proc.pid)
                self._has_exited(proc)

    def _has_exited(self, proc) -> bool:
        """From a worker: has the helper ended, as the view knows it? The C
        core journals exits without waking Python; waking the tracer makes
        it replay them (and so release what the helper held: a device it
        had open must not look busy to the next umount)."""
        if not proc.exited:
            self.tracer.call_soon(lambda: None).get()
        return proc.exited

    def finish_helpers(self, timeout: float = 10.0) -> None:
        """After shutdown: let helpers end, then kill what is left."""
        deadline = time.monotonic() + timeout
        self.tracer.run(until=lambda: time.monotonic() > deadline)
        for proc in list(self.tracer.processes.values()):
            _kill(proc.pid)
        self.tracer.run()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._tmpdir is not None:
            import shutil
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def only_helpers_left(self) -> bool:
        # before attach_all the tracer knows only the processes it started:
        # the view ends when umvu has no child left (see Tracer.run)
        return self.tracer.attached and all(
            p.helper for p in self.tracer.processes.values())

    def _defer(self, stop):
        def work():
            stop.new_args.clear()
            stop.exit_hook = None
            try:
                result = self._dispatch(stop)
            except WouldBlock:
                result = -errno.EIO
            self.tracer.post(stop, result)
        self.submit(work)
        return DEFER

    # ---- dispatch ----------------------------------------------------------
    def on_syscall(self, stop) -> int | None:
        try:
            return self._dispatch(stop)
        except WouldBlock:
            return self._defer(stop)

    def _dispatch(self, stop) -> int | None:
        stop.answered_by = "kernel"
        nr = stop.nr
        try:
            if nr < 0:
                stop.answered_by = "umvu"
                return self._control(stop)
            if stop.data == seccomp_filter.DATA_OTHER_ABI:
                if abi32.refused(nr) and self.guarding():
                    stop.answered_by = "umvu"
                    return -errno.ENOSYS
                return None
            if nr in GUARDED_NRS and self.guarding():
                refusal = self._guard(stop)
                if refusal is not None:
                    stop.answered_by = "umvu"
                    return refusal
            if nr == NR_MOUNT:
                return self._mount(stop)
            if nr == NR_UMOUNT2:
                return self._umount(stop)
            if self.vfs is not None and nr in self.vfs.handlers:
                result = self.vfs.on_syscall(stop)
                if result is not None or stop.new_args or stop.exit_hook:
                    return result
            for module, method in self.handlers.get(nr, ()):
                result = self._call_module(module, method, stop)
                if result is not None:
                    stop.answered_by = module.name
                    return result
            if nr in CRED_NRS:
                # the kernel changes the process's real credentials (a
                # module's virtual ids change nothing the kernel checks)
                creds.forget_creds(stop.process.pid)
                stop.process.creds_changed = True   # the C core walks no more
                self.vfs.feeder.sync(stop.process)
            return None
        except OSError as exc:
            return -(exc.errno or errno.EIO)
        except WouldBlock:
            raise
        except BaseException:   # module code: SystemExit too, never our end
            log.error("%s failed in %s (the call returns EIO):\n%s",
                      stop.answered_by, syscall_table.name_of(nr),
                      logs.format_exc().rstrip())
            return -errno.EIO
        finally:
            _serve_for(NOBODY)          # Caller.current() is no one between calls

    def guarding(self) -> bool:
        """Is a file system mounted? Then the ways around the view are
        closed (docs/security.md): the view would not see what they do."""
        return bool(self.services.mount_points())

    def _guard(self, stop) -> int | None:
        """-EPERM (or -ENOSYS) for a call that would escape the mounts,
        None to let it run."""
        name = syscall_table.name_of(stop.nr)
        if name in ("unshare", "clone"):
            flags = stop.args[0]
        elif name == "clone3":
            try:
                flags = struct.unpack("Q", stop.read(stop.args[0], 8))[0]
            except OSError:
                return None             # the kernel says EFAULT
        elif name in ("io_uring_enter", "io_uring_register"):
            return -errno.ENOSYS        # as io_uring_setup: requests would bypass it
        else:
            return -errno.EPERM         # setns, the new mount API
        return -errno.EPERM if flags & NAMESPACE_FLAGS else None

    def _call_module(self, module: Module, method, stop):
        call = Call(syscall_table.name_of(stop.nr), stop, self, module)
        try:
            return method(call)
        except OSError as exc:
            return -(exc.errno or errno.EIO)
        except WouldBlock:
            raise
        except BaseException:   # SystemExit from module code too
            log.error("module %s failed in %s (the call returns EIO):\n%s",
                      module.name, call.name, logs.format_exc().rstrip())
            return -errno.EIO

    # ---- control path -------------------------------------------------------
    def _control(self, stop) -> int:
        nr, args = stop.nr, stop.args
        if nr == control.VU_INSMOD:
            return self.insmod(os.fsdecode(stop.read_str(args[0], 256)),
                               bool(args[1] & 0xffffffff))
        if nr == control.VU_RMMOD:
            return self.rmmod(os.fsdecode(stop.read_str(args[0], 256)))
        if nr == control.VU_LSMOD:
            return self._lsmod(stop, args[0], args[1])
        if nr == control.VUCTL:
            return self._vuctl(stop, signed(args[0]) & 0xffffffff, args[1:])
        if nr == control.MSOCKET:
            for module, method in self.handlers.get(control.MSOCKET, ()):
                result = self._call_module(module, method, stop)
                if result is not None:
                    return result
            return -errno.ENOTSUP
        return -errno.ENOSYS

    def insmod(self, name: str, permanent: bool = False) -> int:
        if name in self.modules:
            return -errno.EEXIST
        from . import loader        # not before a module is loaded: start-up
        self._file_system_layer()
        try:
            cls = loader.find(name)
            module = cls(ServiceContext(self))
            module.init()
        except OSError as exc:
            log.debug("vu_insmod %s: %s", name, exc)
            return -(exc.errno or errno.EINVAL)
        except BaseException:   # an import that calls sys.exit too
            log.error("module %s failed to load:\n%s", name,
                      logs.format_exc().rstrip())
            return -errno.ENOEXEC
        self.modules[name] = module
        if permanent:
            self.permanent.add(name)
        self._register(module)
        self._update_filter()
        log.debug("module %s loaded", name)
        return 0

    def rmmod(self, name: str) -> int:
        module = self.modules.get(name)
        if module is None:
            return -errno.ENOENT
        if name in self.permanent or self.services.of_module(module):
            return -errno.EBUSY
        try:
            module.fini()
        except BaseException:
            log.error("module %s failed in fini:\n%s", name, logs.format_exc())
        del self.modules[name]
        for nr in list(self.handlers):
            self.handlers[nr] = [h for h in self.handlers[nr] if h[0] is not module]
            if not self.handlers[nr]:
                del self.handlers[nr]
        for proc in self.tracer.processes.values():
            proc.data.pop(name, None)
        self._update_filter()
        return 0

    def _register(self, module: Module) -> None:
        for sysname, method in _handlers_of(module).items():
            nr = _CONTROL_HANDLERS.get(sysname) or syscall_table.NR[sysname]
            self.handlers.setdefault(nr, []).insert(0, (module, method))

    def _update_filter(self) -> None:
        families, names = set(), set()
        for module in self.modules.values():
            families.update(module.families)
            names.update(n for n in _handlers_of(module) if n in syscall_table.NR)
            names.update(module.syscalls)
        if "path" in families:
            names.update(self.vfs.ALWAYS)
            names.update(GUARDED)
        if families and os.geteuid() == 0:
            names.update(CRED_CHANGERS)
            creds.watch_creds()
        self.tracer.set_trapped(seccomp_filter.trapped_numbers(families, names))
        self._update_fast("path" in families)

    def _update_fast(self, vfs_active: bool) -> None:
        """Tell the C core which trapped calls it may let through alone."""
        def taken(nr):              # a module, the mount table or a guard
            return nr in self.handlers or nr in (NR_MOUNT, NR_UMOUNT2) or \
                nr in CRED_NRS or nr in GUARDED_NRS
        self.vfs.feeder.set_rows(self.tracer.trapped | self.tracer.tightened,
                                 taken, vfs_active)

    def _mounts_changed(self) -> None:
        self.vfs.feeder.mounts_changed()

    def _lsmod(self, stop, buf: int, size: int) -> int:
        text = "".join(f"{m.name}: {m.description}\n" for m in self.modules.values())
        data = text.encode() + b"\0"
        if buf:
            stop.write(buf, data[:size])
        return len(data)

    def _vuctl(self, stop, tag: int, args) -> int:
        if tag == control.VUCTL_GETINFO:
            if args[0]:
                stop.write(args[0], control.pack_info(os.uname(), str(os.getpid()),
                                                      self.name))
            return 0
        if tag == control.VUCTL_SETNAME:
            self.name = os.fsdecode(stop.read_str(args[0], 65))[:64]
            return 0
        if tag == control.VUCTL_DUMP:           # vuname --dump
            from .viewstate import encode
            data = encode(self, stop.process.pid)
            if args[0]:
                stop.write(args[0], data[:args[1]])
            return len(data)
        if tag == control.VUCTL_GET_DEBUGTAGS:
            data = "".join(sorted(self.debug_tags)).encode() + b"\0"
            if args[0]:
                stop.write(args[0], data[:args[1]])
            return 0
        if tag in (control.VUCTL_ADD_DEBUGTAGS, control.VUCTL_DEL_DEBUGTAGS):
            tags = set(os.fsdecode(stop.read_str(args[0], 128)))
            if tag == control.VUCTL_ADD_DEBUGTAGS:
                self.debug_tags |= tags
            else:
                self.debug_tags -= tags
            return 0
        if tag in (control.VUCTL_GET_DEBUGTAGNAME, control.VUCTL_SET_DEBUGCOLOR):
            return 0
        for module, method in self.handlers.get(control.VUCTL, ()):
            result = self._call_module(module, method, stop)
            if result is not None:
                return result
        return -errno.EINVAL

    # ---- mount table ----------------------------------------------------------
    def _opt_str(self, stop, addr: int) -> str:
        return os.fsdecode(stop.read_str(addr)) if addr else ""

    def _mount(self, stop) -> int | None:
        source = self._opt_str(stop, stop.args[0])
        fstype = self._opt_str(stop, stop.args[2])
        module = self.module_for_type(fstype)
        if module is None and fstype.startswith("vu"):
            # a VUOS type whose module is not loaded: the kernel would say
            # EPERM (or ENODEV), which tells the user nothing
            log.error("no loaded module serves type %s (vu_insmod it first?)",
                      fstype)
            return -errno.ENODEV
        if module is None:
            return None         # the kernel decides (EPERM unless privileged)
        stop.answered_by = module.name
        if not stop.args[1]:
            return -errno.EFAULT        # as the kernel: no target, no mount
        flags = _mount_flags(stop.args[3])
        if flags is None:
            return -errno.EINVAL
        target = self.resolve(stop.process, self._opt_str(stop, stop.args[1]))
        if self._own(target) and fstype.startswith(module.name):
            raise OSError(errno.EBUSY, "the hypervisor's own directory")
        options = self._opt_str(stop, stop.args[4])
        request = MountRequest(source, target, fstype, flags, options,
                               Caller(stop.process.pid, stop.tid))
        _serve_for(request.caller)      # the mount's own lookups are the caller's
        try:
            service = module.mount(request)
        except OSError as exc:
            _log_message(exc)
            raise
        if service is None:
            return 0                # the module took note; nothing new to mount
        if not isinstance(service, Service):
            raise TypeError(f"{module.name}.mount returned {service!r}")
        try:
            self.add_service(service)
        except OSError as exc:          # its attach() refused the mount
            _log_message(exc)
            raise
        return 0

    def remove_service(self, service: Service) -> None:
        if service in list(self.services):
            self.services.remove(service)
            self._mounts_changed()

    def add_service(self, service: Service, internal: bool = False) -> None:
        """Mount a service. Internal ones (a module's own, e.g. vufuse's
        /dev/fuse) are not listed in /proc/mounts nor keep it busy."""
        service.internal = internal
        self.services.add(service)
        if isinstance(service, PathService):
            from .vfs.lower import LowerView     # imported with the VFS
            service.lower = LowerView(self.services, service.epoch)
            try:
                service.attach()
            except BaseException:
                self.services.remove(service)
                raise
        self._mounts_changed()
        log.debug("mounted %r", service)

    def _umount(self, stop) -> int | None:
        if self.vfs is None:
            return None             # no module was ever loaded: the kernel's
        path = self._opt_str(stop, stop.args[0])
        # the mount point itself first, without asking its (maybe dead) service
        target = self.resolve(stop.process, path, follow=False)
        if self.services.at(target) is None and not stop.args[1] & UMOUNT_NOFOLLOW:
            target = self.resolve(stop.process, path, follow=True)
        service = self.services.at(target)
        if service is None and self._own(target):
            return 0                # a helper leaving one of the view's own dirs
        if service is None or service.module is None:
            return None
        flags = stop.args[1] & 0xffffffff
        stop.answered_by = service.module.name
        if not flags & (MNT_FORCE | MNT_DETACH) and self.vfs.in_use(service):
            return -errno.EBUSY
        try:
            service.module.umount(service, flags)
        except OSError as exc:
            _log_message(exc)
            raise
        self.services.remove(service)
        self._mounts_changed()
        return 0

    def module_for_type(self, fstype: str) -> Module | None:
        """Newest loaded module whose name is a prefix of the fs type."""
        for module in reversed(list(self.modules.values())):
            if fstype.startswith(module.name) or any(
                    fstype == t or fstype.startswith(t + ".") for t in module.fstypes):
                return module
        return None

    def shutdown(self) -> None:
        self.shutting_down = True
        with self.lock:
            self._unmount_all()

    def _unmount_all(self) -> None:
        for service in reversed(list(self.services)):
            if service.module is None:
                continue
            try:
                service.module.umount(service, MNT_DETACH)
            except BaseException:
                log.error("umount of %r failed:\n%s", service, logs.format_exc())
            self.services.remove(service)
        for module in reversed(list(self.modules.values())):
            try:
                module.fini()
            except BaseException:
                log.error("module %s failed in fini:\n%s", module.name,
                          logs.format_exc())


#: mount(2) flags the kernel knows (MS_RDONLY ... MS_LAZYTIME); MS_NOUSER
#: is the kernel's own, refused from user space
_MS_KNOWN = (1 << 26) - 1
_MS_NOUSER = 1 << 31
_MS_PROPAGATION = 1 << 17 | 1 << 18 | 1 << 19 | 1 << 20
_MS_MGC_MSK, _MS_MGC_VAL = 0xffff0000, 0xc0ed0000


def _mount_flags(raw: int) -> int | None:
    """mount(2)'s flags as do_mount() reads them: the old magic number
    dropped, unknown bits ignored; None (EINVAL) for MS_NOUSER, for two
    propagation types, or for two kinds of mount at once (a remount may be
    a bind remount)."""
    if raw & _MS_MGC_MSK == _MS_MGC_VAL:
        raw &= ~_MS_MGC_MSK
    if raw & _MS_NOUSER:
        return None
    propagation = raw & _MS_PROPAGATION
    if propagation & (propagation - 1):
        return None
    kinds = (bool(raw & linux.MS_REMOUNT) + bool(raw & linux.MS_MOVE) +
             bool(propagation) +
             bool(raw & linux.MS_BIND and not raw & linux.MS_REMOUNT))
    return None if kinds > 1 else raw & _MS_KNOWN


def _log_message(exc: OSError) -> None:
    """A module's own message (not just strerror) is for the user."""
    if exc.strerror and exc.errno and exc.strerror != os.strerror(exc.errno):
        log.error("%s", exc.strerror)


def _kill(pid: int) -> None:
    """SIGKILL a helper that would not end (it may just have ended)."""
    try:
        os.kill(pid, signal.SIGKILL)
        log.error("helper %d did not end: killed", pid)
    except ProcessLookupError:
        pass


def _remove_orphaned_tmpdirs() -> None:
    """The directories of this user's hypervisors that died without
    cleaning up (kill -9): their pid, in the name, is no umvu any more."""
    import re
    import shutil
    import tempfile
    top = tempfile.gettempdir()
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        match = re.fullmatch(r"umvu-(\d+)-\w+", name)
        if match is None:
            continue
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue
        try:
            with open(f"/proc/{match.group(1)}/cmdline", "rb") as f:
                if b"umvu" in f.read():
                    continue            # alive
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)


class ViewIds:
    """What View.view_ids answers: (real, effective, saved, fs) uids and
    gids, and the supplementary groups, as the process sees them."""

    __slots__ = ("uids", "gids", "groups")

    def __init__(self, uids: tuple, gids: tuple, groups: list):
        self.uids, self.gids, self.groups = uids, gids, groups

    def __repr__(self):
        return f"<ViewIds uids={self.uids} gids={self.gids} groups={self.groups}>"


class _IdsQuery:
    """A call no process made: the view asking a module of virtual ids what
    a process's ids are (view_ids). The module's handler sees it as that
    process's getresfuid/getresfgid/getgroups; getgroups writes into
    `memory`, never into the process."""

    __slots__ = ("process", "tid", "nr", "args", "memory")
    BUF = 0x1000
    MAX_GROUPS = 65536

    def __init__(self, process, tid: int):
        self.process, self.tid = process, tid
        self.nr = syscall_table.NR["getgroups"]
        self.args = (self.MAX_GROUPS, self.BUF, 0, 0, 0, 0)
        self.memory = bytearray()

    def read(self, addr: int, size: int) -> bytes:
        raise OSError(errno.EFAULT, "no caller memory")

    def read_str(self, addr: int, limit: int = 4096) -> bytes:
        raise OSError(errno.EFAULT, "no caller memory")

    def write(self, addr: int, data: bytes) -> None:
        if addr != self.BUF:
            raise OSError(errno.EFAULT, "no caller memory")
        self.memory[:] = data


_ID_HANDLERS: dict = {}


def _id_handlers(cls) -> dict:
    """A module class's handlers of the calls view_ids asks (name -> attr)."""
    if cls not in _ID_HANDLERS:
        _ID_HANDLERS[cls] = {n: a for n, a in cls.handlers().items()
                             if n in ("getresfuid", "getresfgid", "getgroups")}
    return _ID_HANDLERS[cls]


def _handlers_of(module: Module) -> dict:
    """syscall name -> handler: the module's own, and for its virtual calls
    (umvu.vcalls) one adapter per variant syscall."""
    from . import vcalls
    marked = {name: getattr(module, attr) for name, attr in module.handlers().items()}
    found = {n: m for n, m in marked.items() if n not in syscall_table.VIRTUAL_CALLS}
    for vname in marked.keys() & syscall_table.VIRTUAL_CALLS.keys():
        for sysname in syscall_table.VIRTUAL_CALLS[vname]:
            if sysname in found:
                continue                # a handler of the syscall itself wins
            adapter = vcalls.adapt(sysname, vname, marked)
            if adapter is not None:
                found[sysname] = adapter
    return found
