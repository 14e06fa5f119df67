"""vusu [-c CMD] [-l|-] [-s SHELL] [-m|-p] [USER]: become USER (default root)
inside a view where unrealuidgid is loaded. Outside a view it runs su."""

import ctypes
import errno
import os
import pwd
import sys

from .. import control
from .common import Parser, fail

KEEP_ON_LOGIN = ("TERM", "COLORTERM", "DISPLAY", "XAUTHORITY")


def login_defs_path(root: bool) -> str:
    key = "ENV_SUPATH" if root else "ENV_PATH"
    default = ("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
               if root else "/usr/local/bin:/usr/bin:/bin")
    try:
        with open("/etc/login.defs") as defs:
            for line in defs:
                words = line.split()
                if len(words) == 2 and words[0] == key:
                    return words[1].removeprefix("PATH=")
    except OSError:
        pass
    return default


def build_parser() -> Parser:
    p = Parser("vusu", __doc__)
    p.add_argument("-c", "--command", metavar="CMD",
                   help="run CMD with the shell (-c) instead of an interactive shell")
    p.add_argument("-l", "--login", action="store_true",
                   help="a login shell: a clean environment, PATH from "
                        "/etc/login.defs, the user's home as cwd (also: -)")
    p.add_argument("-s", "--shell", metavar="SHELL",
                   help="the shell to run (default: the user's)")
    p.add_argument("-m", "-p", "--preserve-environment", action="store_true",
                   dest="preserve", help="keep the environment as it is")
    p.add_argument("rest", nargs="*", metavar="[-] [USER]",
                   help="the user to become (default root)")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = build_parser()
    if control.get_info() is None and not {"-h", "--help", "--version"} & set(argv):
        try:
            os.execvp("su", ["su"] + argv)
        except OSError as exc:
            fail(f"su: {exc.strerror}")
    args = p.parse_args(argv)
    rest = list(args.rest)
    if rest and rest[0] == "-":
        args.login = True
        rest.pop(0)
    if len(rest) > 1:
        p.error("too many arguments")
    user = rest[0] if rest else "root"
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        fail(f"user {user} does not exist", 1)

    env = dict(os.environ)
    if args.login and not args.preserve:
        env = {k: v for k, v in env.items() if k in KEEP_ON_LOGIN}
    shell = args.shell or (env.get("SHELL") if args.preserve else pw.pw_shell) or "/bin/sh"
    env.pop("IFS", None)
    if not args.preserve:
        env.update(USER=pw.pw_name, LOGNAME=pw.pw_name, SHELL=shell)
        # files are still accessed with the real credentials: a home the
        # real user cannot read (/root) would only give the shell errors
        if os.access(pw.pw_dir, os.R_OK | os.X_OK):
            env["HOME"] = pw.pw_dir
    if args.login and not args.preserve:
        # as su -l: PATH from login.defs, plus where the view's helpers are
        helpers = os.path.dirname(os.path.abspath(sys.argv[0]))
        env["PATH"] = login_defs_path(pw.pw_uid == 0) + (
            f":{helpers}" if os.access(os.path.join(helpers, "vu_insmod"), os.X_OK)
            else "")
    try:
        # as su is setuid root, vusu asks unrealuidgid for root first
        try:
            control.vucall(control.VUCTL, ctypes.c_int(control.VUCTL_SU))
        except OSError as exc:
            if exc.errno != errno.EINVAL:   # EINVAL: no module took the tag;
                raise                       # a real root may still go on
        os.setgroups(os.getgrouplist(pw.pw_name, pw.pw_gid))
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    except OSError as exc:
        fail(f"cannot become {user}: {exc.strerror} (is unrealuidgid loaded?)")
    if args.login:
        try:
            os.chdir(env.get("HOME", pw.pw_dir))
        except OSError:
            os.chdir("/")
    arg0 = ("-" if args.login else "") + os.path.basename(shell)
    cmd = [arg0] + (["-c", args.command] if args.command is not None else [])
    try:
        os.execve(shell, cmd, env)
    except OSError as exc:
        fail(f"{shell}: {exc.strerror}", 126 if exc.errno != 2 else 127)
