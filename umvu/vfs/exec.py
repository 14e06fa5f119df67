"""exec in the view: execve/execveat of a file below a service (redirected
to its host file, or a served file copied to one), and the interpreters the
kernel would not find: a module's own (Module.exec_interpreter, binfmt_misc's
place) and a `#!` script's interpreter that the view has elsewhere. The
view then execs the interpreter itself, with the argv the kernel would
give."""

from __future__ import annotations

import errno
import os
import stat
import struct

from .. import creds
from ..linux import AT_FDCWD, MS_NOEXEC
from ..module import Answer, ExecRequest, Module, PathCall, Redirect
from . import decode, served
from .decode import signed32

#: interpreters an exec may go through before ELOOP (as the kernel)
EXEC_DEPTH = 5


class ExecCalls:
    def __init__(self, vfs):
        self.vfs = vfs

    def sys_execve(self, stop, pfs, sc):
        call = decode.path_args(stop, sc)
        if call.path is None or call.empty:
            return None                 # the kernel's (EFAULT; the fd itself)
        paths = self.vfs.paths
        res = paths.resolve(stop, pfs, call.path, call.dirfd, call.follow)
        if res is None:
            return None
        if not res.touched:
            return None if res.error else self.interpreters(
                stop, pfs, sc, res.path, res.path)
        if res.error:
            return -res.error
        if res.service is not None and getattr(res.service, "flags", 0) & MS_NOEXEC:
            return -errno.EACCES        # mount -o noexec
        final = paths.final(stop, res, decode.path_call(
            call.name, call.op, res.path, call.flags, stop.args, decode.caller(stop)))
        if isinstance(final, int):
            return final
        if isinstance(final, Answer):
            return self._served(stop, pfs, sc, call, res, final)
        host = final.path
        if res.trailing_slash and not host.endswith("/"):
            host += "/"
        paths.rewrite(stop, call.path_at, host, call.dirfd_at)
        expect_exe(stop, res.path)
        self.vfs.feeder.proc_virtual()  # before the C core meets /proc/self/exe
        return self.interpreters(stop, pfs, sc, host, res.path)

    sys_execveat = sys_execve

    def _served(self, stop, pfs, sc, call, res, answer):
        """exec of a file a service serves: a host copy runs."""
        if answer.kind == "link":
            return -errno.EINVAL
        if answer.kind == "socket":
            return -errno.ENOTSUP
        if answer.kind == "stat":
            opened = answer.service.path_call(PathCall(
                "open", "open", res.path, flags=0, caller=decode.caller(stop)))
            if not isinstance(opened, Answer) or opened.kind != "served":
                return opened if isinstance(opened, int) else -errno.EACCES
            answer = opened
        exe = os.path.join(self.vfs.view.tmpdir, f"exec-{stop.process.pid}")
        served.materialize(answer.value, exe)
        answer.value.release()
        served.give(exe, stop)
        expect_exe(stop, res.path)
        self.vfs.paths.rewrite(stop, call.path_at, exe, call.dirfd_at)
        return self.interpreters(stop, pfs, sc, exe, res.path)

    def interpreters(self, stop, pfs, sc, host: str, vpath: str):
        """Interpreters the kernel would not find: the modules' own
        (Module.exec_interpreter, binfmt_misc's place: first), then a `#!`
        script's interpreter when the view has it elsewhere. Then exec the
        interpreter ourselves with the argv the kernel would give (`#!`:
        [interp, optional arg, script path, argv[1:]...]); it may be a
        script or a foreign binary in its turn."""
        hooks = [m for m in reversed(list(self.vfs.view.modules.values()))
                 if type(m).exec_interpreter is not Module.exec_interpreter]
        argv_at = 1 if sc.name == "execve" else 2
        filename = vpath
        # the name the caller gave, as the kernel passes it on ($0 of a script)
        given = decode.read_path(stop, stop.args[sc.path])
        if given.startswith("/") or sc.at is None or \
                signed32(stop.args[sc.at]) == AT_FDCWD:
            filename = given
        strings = None          # the new argv (strings, or the caller's pointers)
        rewritten = False
        for depth in range(EXEC_DEPTH + 1):
            head = _exec_head(stop, host)
            if head is None:
                break
            prefix = None
            if hooks:
                if strings is None:
                    strings = decode.argv_pointers(stop, stop.args[argv_at])
                argv0 = stop.read_str(strings[0], 4096) if strings and \
                    isinstance(strings[0], int) else (strings or [b""])[0]
                request = ExecRequest(vpath, filename, head, os.fsdecode(argv0),
                                      decode.caller(stop))
                for module in hooks:
                    self.vfs.answered(stop, module)
                    prefix = module.exec_interpreter(request)
                    if prefix:
                        break
            script = not prefix
            if script:
                prefix = script_line(head, filename)
                if prefix is None:
                    break
            if depth == EXEC_DEPTH:
                return -errno.ELOOP
            res = self.vfs.walker.resolve(prefix[0], pfs.fs.cwd, pfs.fs.root, True,
                                          stop.process.pid)
            if res.error:
                return -res.error
            if script and not res.touched and not rewritten and not hooks and \
                    host == vpath:
                return None     # the kernel finds it (and names the script
                                # as the caller did: a script below a mount
                                # must be named by its path in the view)
            final = self.vfs.paths.final(stop, res, PathCall(
                "execve", "stat", res.path, caller=decode.caller(stop)))
            if isinstance(final, int):
                return final
            if not isinstance(final, Redirect):
                return -errno.EACCES    # a served interpreter: not (yet)
            if strings is None:
                strings = decode.argv_pointers(stop, stop.args[argv_at])
            strings = [os.fsencode(x) for x in prefix] + strings[1:]
            rewritten = True
            host, vpath, filename = final.path, res.path, prefix[0]
        if not rewritten:
            return None
        pointers = [x if isinstance(x, int) else stop.scratch(x + b"\0")
                    for x in strings] + [0]
        stop.set_arg(argv_at, stop.scratch(struct.pack(f"{len(pointers)}Q", *pointers)))
        self.vfs.paths.rewrite(stop, sc.path, host, sc.at)
        expect_exe(stop, vpath)
        return None


def expect_exe(stop, vpath: str) -> None:
    """What /proc/PID/exe names once this exec succeeds; nothing left
    behind for a later exec when it fails."""
    stop.process.pending_exe = vpath

    def failed(result):
        if result < 0:
            stop.process.pending_exe = None
        return None
    stop.on_exit(failed)


def _exec_head(stop, host: str) -> bytes | None:
    """The first bytes of a file the caller may exec, else None (the
    kernel says why)."""
    try:
        with creds.acting_as(stop.process.pid):
            if not os.access(host, os.X_OK, effective_ids=True):
                return None
        with open(host, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read(256)
    except OSError:
        return None


def script_line(head: bytes, filename: str) -> list[str] | None:
    """The argv head a `#!` line gives: [interp, optional arg, filename]."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip()
    if not line:
        return None
    interp, _, optarg = line.partition(b" ")
    optarg = optarg.strip()
    return [os.fsdecode(interp)] + ([os.fsdecode(optarg)] if optarg else []) + [filename]
