"""Applying a view file, inside the view: the first process of the view
runs `python -m umvu.viewapply STATEMENTS -- PATH ARGV...`, issues the
statements as the helper commands would (vu_insmod, mount(2), vusu's
VUCTL_SU and set*id...), then execs the command.

Why a process of the view and not the hypervisor itself: a statement then
does exactly what the same line typed by hand does (a FUSE daemon's mount
waits for its INIT as `vumount` does; paths resolve through the mounts
made before), and what belongs to a process (`user root`, a default
`stack`) belongs to the command, which inherits it across the exec. If a
statement fails nothing more is done: the command never runs in a view
built by half; the error names the file, line and column (exit status 2).
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

from . import control, viewfile
from .viewfile import Statement, ViewFileError

_libc = ctypes.CDLL(None, use_errno=True)


class ApplyError(ViewFileError):
    pass


def _mount(st: Statement, source: str, target: str, fstype: str,
           options: str = "", readonly: bool = False) -> None:
    from .commands.vumount import MS, split_options
    flags, data = split_options(options)
    if readonly:
        flags |= MS["ro"]
    ret = _libc.mount(os.fsencode(source), os.fsencode(target), os.fsencode(fstype),
                      ctypes.c_ulong(flags), os.fsencode(data) or None)
    if ret != 0:
        err = ctypes.get_errno()
        raise ApplyError(st.where, f"mount -t {fstype} {source} {target}: "
                         f"{os.strerror(err)}")


def _write_setting(st: Statement, directory: str, name: str, value: str) -> None:
    try:
        with open(os.path.join(directory, name), "w") as f:
            f.write(value + "\n")
    except OSError as exc:
        raise ApplyError(st.at(0), f"{st.kind} {value}: {exc.strerror}") from None


def apply(st: Statement, env: dict) -> None:
    """Do one statement in this process (ApplyError if it fails)."""
    if st.kind == "insmod":
        for i, name in enumerate(st.args):
            try:
                control.vucall(control.VU_INSMOD, os.fsencode(name),
                               int(bool(st.opts.get("permanent"))))
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    continue            # an rc file loaded it already
                from .commands.common import describe
                raise ApplyError(st.at(i), f"insmod {describe(exc, name)}") from None
    elif st.kind == "mount":
        _mount(st, st.args[0], st.args[1], st.opts.get("type", ""),
               st.opts.get("options", ""), bool(st.opts.get("readonly")))
    elif st.kind == "user":
        _become(st)
    elif st.kind == "hostname":
        _mount(st, "none", viewfile.UNAME_DIR, "vumiscuname")
        _write_setting(st, viewfile.UNAME_DIR, "nodename", st.args[0])
    elif st.kind == "time-scale":
        scale = viewfile.parse_scale(st.args[0])
        # monotonic: waits (sleep, timeouts) follow the pace too; a stopped
        # clock cannot (every wait would last forever)
        _mount(st, "none", viewfile.TIME_DIR, "vumisctime",
               "monotonic" if scale else "")
        _write_setting(st, viewfile.TIME_DIR, "frequency", st.args[0])
    elif st.kind == "stack":
        _stack(st)
    elif st.kind == "name":
        try:
            control.vucall(control.VUCTL, ctypes.c_int(control.VUCTL_SETNAME),
                           os.fsencode(st.args[0]))
        except OSError as exc:
            raise ApplyError(st.where, f"name: {exc.strerror}") from None
        env["UMVU_VIEWNAME"] = st.args[0]
    elif st.kind == "export":
        env[st.args[0]] = st.args[1]
    else:
        raise ApplyError(st.where, f"{st.kind}: not a statement")


def _become(st: Statement) -> None:
    uid, gid, name = viewfile.user_ids(st.args[0])
    try:
        if uid != os.getuid():
            try:
                control.vucall(control.VUCTL, ctypes.c_int(control.VUCTL_SU))
            except OSError as exc:
                if exc.errno != errno.EINVAL:   # no module took it: a real
                    raise                       # root may go on
            try:
                groups = os.getgrouplist(name, gid)
            except OSError:
                groups = [gid]
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise ApplyError(st.where, f"user {st.args[0]}: {exc.strerror} "
                         "(is unrealuidgid loaded?)") from None


def _stack(st: Statement) -> None:
    """The default network stack of this process (and so of the command):
    msocket(PATH, 0, SOCK_DEFAULT, 0), as vustack sets it (every family
    the stack serves)."""
    SOCK_DEFAULT = 0
    try:
        control.vucall(control.MSOCKET, os.fsencode(st.args[0]), 0, SOCK_DEFAULT, 0)
    except OSError as exc:
        raise ApplyError(st.at(0), f"stack {st.args[0]}: {exc.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("umvu: viewapply: usage: STATEMENTS -- PATH ARGV...", file=sys.stderr)
        return 2
    statements = viewfile.loads(argv[0])
    path, command = argv[2], argv[3:]
    env = dict(os.environ)
    for st in statements:
        try:
            apply(st, env)
        except ViewFileError as exc:
            print(f"umvu: {exc}\numvu: the view was not started: {command[0]} "
                  "did not run", file=sys.stderr)
            return 2
    sys.stdout.flush()
    try:
        os.execve(path, command, env)
    except OSError as exc:
        print(f"umvu: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 126 if exc.errno != errno.ENOENT else 127


if __name__ == "__main__":
    sys.exit(main())
