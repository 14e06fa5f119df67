"""`umvu [OPTIONS] [--] [CMD [ARGS...]]`: start a view and run CMD in it."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import sys

from . import __version__, control

EPILOG = """\
examples:
  umvu                        your shell ($SHELL) in a new view
  umvu bash                   as in the VUOS tutorial; then inside:
                                vu_insmod unrealuidgid; vusu -c id
  umvu -N -- make -j2         run a build, no rc files
  umvu --trace -o umvu.log -- python3 script.py
                              log every intercepted call to umvu.log
exit status: the command's own; 128+N when it died of signal N;
             127 when it cannot be found; 2 for umvu's own errors.
"""

DEBUG_TAGS = {"t": "umvu.tracer", "m": "umvu", "s": "umvu.trace"}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="umvu", description="Run CMD (default: your shell) in a "
                "partial virtual machine: a view of the system that modules "
                "loaded inside it can change.", epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--rc", metavar="FILE", action="append",
                   help="run FILE with /bin/sh inside the view before CMD "
                        "(repeatable; default: /etc/vurc then ~/.vurc)")
    p.add_argument("-N", "--norc", action="store_true",
                   help="do not run the default rc files")
    p.add_argument("-V", "--viewname", metavar="NAME", default="",
                   help="name of the view (vuname, $UMVU_VIEWNAME)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the hypervisor's messages to FILE")
    p.add_argument("-d", "--debug", metavar="TAGS", action="append", default=[],
                   help="debug messages: t=tracer, m=modules, s=syscalls "
                        "(letters or comma-separated names; 'all')")
    p.add_argument("--trace", action="store_true",
                   help="log each intercepted syscall with its arguments, "
                        "result and who answered (kernel or a module)")
    p.add_argument("--version", action="version", version=f"umvu {__version__}")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")
    return p


def debug_tags(debug: list[str]) -> set[str]:
    """The logger names -d asks for; UsageError for a word we do not know."""
    names = set()
    for item in debug:
        for word in item.replace(",", " ").split():
            if word == "all":
                names.update(DEBUG_TAGS.values())
            elif word in DEBUG_TAGS.values():
                names.add(word)
            elif all(letter in DEBUG_TAGS for letter in word):
                names.update(DEBUG_TAGS[letter] for letter in word)
            else:
                raise UsageError(f"-d {word}: unknown debug tag (use letters of "
                                 f"{''.join(DEBUG_TAGS)}, logger names or 'all')")
    return names


def _setup_logging(output: str | None, debug: list[str], trace: bool) -> None:
    names = debug_tags(debug)
    stream = open(output, "a", buffering=1) if output else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("umvu: %(message)s"))
    root = logging.getLogger("umvu")
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    root.propagate = False
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    if trace:
        logging.getLogger("umvu.trace").setLevel(logging.DEBUG)


def _rc_files(args) -> list[str]:
    if args.rc:
        return args.rc
    if args.norc:
        return []
    home_rc = os.path.join(os.path.expanduser("~"), ".vurc")
    return [f for f in ("/etc/vurc", home_rc) if os.path.isfile(f)]


def _child_signals() -> list[int]:
    """Signals the child must get back at their default action."""
    sigs = [signal.SIGPIPE, signal.SIGXFSZ]
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            sigs.append(sig)
    return sigs


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"umvu: {exc}\nTry 'umvu --help' for more information.",
              file=sys.stderr)
        return 2
    command = args.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        command = [os.environ.get("SHELL") or "/bin/sh"]
    try:
        _setup_logging(args.output, args.debug, args.trace)
    except OSError as exc:
        print(f"umvu: {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"umvu: {exc}\nTry 'umvu --help' for more information.",
              file=sys.stderr)
        return 2

    env = dict(os.environ)
    env["UMVU_PID"] = str(os.getpid())
    env["UMVU_VIEWNAME"] = args.viewname
    path = shutil.which(command[0], path=env.get("PATH", os.defpath))
    if path is None:
        print(f"umvu: {command[0]}: command not found", file=sys.stderr)
        return 127

    info = control.get_info()
    if info is not None:
        # one tracer per process: this view's hypervisor will have to trace
        # these processes as soon as a module is loaded
        print(f"umvu: already inside a view (hypervisor {info['serverid']}); "
              "one view cannot hold another", file=sys.stderr)
        return 2

    from .view import View          # the C extension loads here
    view = View(args.viewname)
    view.env = env
    log_stream = logging.getLogger("umvu").handlers[0].stream
    if args.output or args.debug:
        view.helper_output = log_stream.fileno()
    if args.trace:
        from .trace_log import attach
        attach(view)
    child_sigs = view.child_signals = _child_signals()
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    root = None

    def forward(sig, _frame):
        if root is not None and not root.exited:
            try:
                os.kill(root.pid, sig)
            except ProcessLookupError:
                pass                # it just ended; the loop will hear of it
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(signal.SIGUSR2, lambda *_: _dump_state(view))

    try:
        for rc in _rc_files(args):
            proc = view.spawn("/bin/sh", ["/bin/sh", rc], env, child_sigs)
            view.tracer.run(until=lambda: proc.exited, watch=proc)
        root = view.spawn(path, command, env, child_sigs)
        view.tracer.run(until=view.only_helpers_left, watch=root)
    except OSError as exc:
        if root is None and exc.errno == errno.EPERM:
            print(f"umvu: cannot trace {command[0]}: {exc.strerror} (already "
                  "inside a view, or under another tracer?)", file=sys.stderr)
        else:
            print(f"umvu: {exc}", file=sys.stderr)
        return 2
    finally:
        view.shutdown()
        view.finish_helpers()       # FUSE daemons flush and end
    return exit_code(root.status)


if __name__ == "__main__":
    sys.exit(main())


def _dump_state(view) -> None:
    """SIGUSR2: print the tracer's tables (debugging a stuck view)."""
    print(f"umvu: {view.tracer.describe()}", file=sys.stderr)
