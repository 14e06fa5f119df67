"""`umvu [OPTIONS] [--] [CMD [ARGS...]]`: start a view and run CMD in it."""

from __future__ import annotations

import errno
import os
import signal
import sys

from . import __version__, control

# argparse, logging, shutil and the one-shot flags' code are imported only
# when used: `umvu CMD` with no option needs none of them (start-up time,
# docs/performance.md)

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


def build_parser():
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(message)

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
    p.add_argument("--kill-after", metavar="SECONDS", type=_seconds, default=10.0,
                   help="after SIGTERM or SIGHUP to umvu, every process of the "
                        "view gets it; those still alive SECONDS later are "
                        "killed (default 10)")
    p.add_argument("--trace", action="store_true",
                   help="log each intercepted syscall with its arguments, "
                        "result and who answered (kernel or a module); "
                        "--trace=summary: a table at the end instead (calls by "
                        "name, by module and by kind of answer, as strace -c)")
    p.add_argument("--trace-summary", action="store_true", help=argparse.SUPPRESS)
    from .oneshot import add_arguments
    add_arguments(p)
    p.add_argument("--version", action="version", version=f"umvu {__version__}")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]",
                   help="the command to run in the view (default: $SHELL)")
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


def _seconds(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"out of range: {text}")
    return value


#: what `umvu CMD` (no option at all) parses to: build_parser()'s defaults
#: (tests/test_startup.py checks they agree), without argparse's import
PLAIN_DEFAULTS = dict(rc=None, norc=False, viewname="", output=None, debug=[],
                      kill_after=10.0, trace=False, trace_summary=False,
                      view=[], check=None, dump=False, root=False, cow=None,
                      clear=None, bind=None, ro=None, disk=None, image=None,
                      net=None, hostname=None, time_scale=None, mount_flags=[])


class _Args:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _plain_args(argv: list[str]):
    """The parsed arguments of `umvu [-N] [--] CMD ARGS...`, else None
    (argparse then parses)."""
    args = _Args(**{k: (list(v) if isinstance(v, list) else v)
                    for k, v in PLAIN_DEFAULTS.items()})
    i = 0
    while i < len(argv) and argv[i] in ("-N", "--norc"):
        args.norc = True
        i += 1
    if i < len(argv) and argv[i] == "--":
        i += 1
    if i == len(argv) or argv[i].startswith("-"):
        return None                 # no CMD (the shell), or an option
    args.command = list(argv[i:])
    return args


def _setup_logging(output: str | None, debug: list[str], trace: bool):
    """The stream the hypervisor's messages go to; logging is configured
    now if -o, -d or --trace asks for it, else when first needed."""
    names = debug_tags(debug)
    stream = open(output, "a", buffering=1) if output else sys.stderr
    from . import logs
    if output or names or trace:
        _configure_logging(stream, names, trace)
    else:
        logs.configure_later(lambda: _configure_logging(stream, names, trace))
    return stream


def _configure_logging(stream, names, trace: bool) -> None:
    import logging
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


def _trace_words(parser, argv: list[str]) -> list[str]:
    """--trace=summary (and --trace=lines) among umvu's options: argparse
    cannot give --trace an optional value without eating CMD."""
    takes_value = {opt for opt, action in parser._option_string_actions.items()
                   if action.nargs != 0}
    out = list(argv)
    i = 0
    while i < len(out):
        word = out[i]
        if word == "--" or not word.startswith("-") or word == "-":
            break                   # CMD starts here
        if word == "--trace=summary":
            out[i] = "--trace-summary"
        elif word == "--trace=lines":
            out[i] = "--trace"
        elif word in takes_value:
            i += 1                  # its value
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _plain_args(argv)
        if args is None:
            parser = build_parser()
            args = parser.parse_args(_trace_words(parser, argv))
    except UsageError as exc:
        print(f"umvu: {exc} (see umvu --help)", file=sys.stderr)
        return 2
    command = args.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        command = [os.environ.get("SHELL") or "/bin/sh"]
    try:
        log_stream = _setup_logging(args.output, args.debug, args.trace)
    except OSError as exc:
        print(f"umvu: {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"umvu: {exc} (see umvu --help)", file=sys.stderr)
        return 2

    if args.check or args.dump:
        from . import oneshot
        return oneshot.check_or_dump(args)
    env = dict(os.environ)
    env["UMVU_PID"] = str(os.getpid())
    env["UMVU_VIEWNAME"] = args.viewname
    path = _which(command[0], env.get("PATH", os.defpath))
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
    setup = _NoSetup()
    statements = []
    if args.view or args.check or args.dump or _wants_view(args):
        from . import oneshot
        setup = oneshot.OneShot()
        try:
            statements = setup.prepare(args)
        except oneshot.SetupError as exc:
            setup.cleanup()
            print(f"umvu: {exc}", file=sys.stderr)
            return 2

    _out_of_reach()
    from .view import View          # the C extension loads here
    view = View(args.viewname)
    view.env = env
    if args.output or args.debug:
        view.helper_output = log_stream.fileno()
    summary = None
    if args.trace or args.trace_summary:
        from .trace_log import Summary, attach
        summary = Summary() if args.trace_summary else None
        attach(view, lines=args.trace, summary=summary)
    child_sigs = view.child_signals = _child_signals()
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    root = None

    def forward(sig, _frame):
        # the whole view ends, as a session's processes do when its
        # terminal hangs up: every process gets the signal, then SIGKILL
        # after the grace period
        _signal_view(view, sig)
        import threading
        timer = threading.Timer(args.kill_after, _signal_view,
                                (view, signal.SIGKILL))
        timer.daemon = True
        timer.start()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(signal.SIGUSR2, lambda *_: _dump_state(view))

    try:
        for rc in _rc_files(args):
            proc = view.spawn("/bin/sh", ["/bin/sh", rc], env, child_sigs)
            view.tracer.run(until=lambda: proc.exited, watch=proc)
        if statements:      # the view file's statements, then CMD
            from . import oneshot
            root = view.spawn(sys.executable, oneshot.applier_argv(
                statements, path, command), env, child_sigs)
        else:
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
        setup.cleanup()             # temporary stores
        if summary is not None:
            print(summary.report(), file=log_stream, flush=True)
    return exit_code(root.status)


if __name__ == "__main__":
    sys.exit(main())


class _NoSetup:
    def cleanup(self) -> None:
        pass


def _wants_view(args) -> bool:
    """oneshot.wants_view without importing it (and argparse with it)."""
    return bool(args.view or args.root or args.mount_flags or args.net
                or args.hostname or args.time_scale is not None)


def _which(name: str, path: str) -> str | None:
    """shutil.which(name, path=path) for a command (shutil's import pulls
    in bz2 and lzma): a name with a slash is taken as it is."""
    if not path and not os.path.dirname(name):
        return None
    if os.path.dirname(name):
        return name if _runnable(name) else None
    for d in path.split(os.pathsep):
        candidate = os.path.join(d, name)
        if _runnable(candidate):
            return candidate
    return None


def _runnable(path: str) -> bool:
    return os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path)


def _signal_view(view, sig: int) -> None:
    """sig to every process of the view but its helpers (FUSE daemons end
    when their file systems are unmounted, after the others)."""
    from .procinfo import descendants
    helpers = {p.pid for p in view.tracer.processes.values()
               if getattr(p, "helper", False)}
    for pid, _ in descendants(os.getpid()):
        if pid not in helpers:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _out_of_reach() -> None:
    """Not dumpable: processes of the view (same user) can then neither
    ptrace the hypervisor, nor write its memory through /proc/PID/mem or
    process_vm_writev, nor take its descriptors with pidfd_getfd: all need
    PTRACE_MODE_ATTACH, which a non-dumpable process refuses to its peers.
    Its children become dumpable again when they exec."""
    import ctypes
    PR_SET_DUMPABLE = 4
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _dump_state(view) -> None:
    """SIGUSR2: print the tracer's tables (debugging a stuck view)."""
    print(f"umvu: {view.tracer.describe()}", file=sys.stderr)
