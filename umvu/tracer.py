"""The tracer: process and thread table, the event loop, signals, and
tightening every tracee's seccomp filter when more must be trapped.

It knows nothing of modules. It reports to a *handler* object:

  handler.on_syscall(stop) -> int | None   result to answer, None: kernel runs it
  handler.on_new_process(parent, child, flags)
  handler.on_new_thread(process, tid)
  handler.on_exec(process)
  handler.on_exit(process)
  handler.on_tightened()      some process traps more numbers than before
                              (tighten_process): see Tracer.tightened
  handler.on_fd_event(process, kind, fd, other, flags, path)
                              the C core changed its descriptor table
                              (journaled: ccore.EV_FD_*)
  handler.on_replayed()       the journal was replayed and the deferred calls
                              completed (at every turn of the loop)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import signal
import struct
import time

from . import ccore
from . import logs, procinfo, seccomp_filter, syscall_table

log = logs.getLogger("umvu.tracer")

STOP_SIGNALS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK = 512, 513, 514, 516
NR_SECCOMP = syscall_table.NR["seccomp"]
NR_RESTART = syscall_table.NR["restart_syscall"]
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
from .linux import CLONE_THREAD  # noqa: E402
U64 = (1 << 64) - 1
PR_SET_CHILD_SUBREAPER = 36
EARLY_EXIT_TTL = 5.0        # seconds an exit of an unknown tid is kept
#: returned by handler.on_syscall: the thread stays stopped; a worker will
#: answer through Tracer.post()
DEFER = object()
_libc = ctypes.CDLL(None, use_errno=True)


def signed(value: int) -> int:
    value &= U64
    return value - (1 << 64) if value >> 63 else value


class Process:
    """A thread group. Modules keep per-process state in `data`."""

    def __init__(self, pid: int, parent: "Process | None", level: int):
        self.pid = pid
        self.parent = parent
        self.threads: dict[int, Thread] = {}
        self.level = level              # index of the newest filter it has
        self.syscall_insn: int | None = None
        self.data: dict = {}
        self.exited = False
        #: descriptor calls this process traps beyond the view's filter:
        #: 0 none, 1 metadata calls, 2 all (set by the view; children inherit)
        self.fd_watch = parent.fd_watch if parent else 0
        #: descriptor numbers whose every call it traps (one filter each)
        self.fd_trapped: set[int] = set(parent.fd_trapped) if parent else set()
        #: a helper of the view (a FUSE daemon...), not the user's: it does
        #: not keep the view alive
        self.helper = parent.helper if parent else False

    def __repr__(self):
        return f"<Process {self.pid}>"


class Thread:
    def __init__(self, tid: int, process: Process):
        self.tid = tid
        self.process = process
        self.listening = False          # parked in a group stop
        self.exit_hook = None           # (hook, saved arg registers)
        self.interrupted = False        # we sent PTRACE_INTERRUPT
        self.traced = True              # PTRACE_SEIZEd (see Tracer.attach_all)


ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")


class TrappedCall:
    """What every trapped call offers its handler: number, arguments and
    the caller's memory."""

    __slots__ = ("thread", "nr", "args", "ip", "data", "arch", "new_args",
                 "exit_hook", "tracer", "answered_by")

    def __init__(self, tracer, thread: Thread, ev):
        self.tracer = tracer
        self.thread = thread
        self.nr = ev.nr
        self.args = tuple(ev.args)
        self.ip = ev.ip
        self.arch = ev.arch
        self.new_args: dict[int, int] = {}
        self.exit_hook = None
        #: for --trace (on_trace): who shaped the call, as the handler says
        self.answered_by = "kernel"

    @property
    def tid(self) -> int:
        return self.thread.tid

    @property
    def process(self) -> Process:
        return self.thread.process

    def read(self, addr: int, size: int) -> bytes:
        return ccore.read(self.tid, addr, size)

    def read_str(self, addr: int, limit: int = 4096) -> bytes:
        return ccore.read_str(self.tid, addr, limit)

    def write(self, addr: int, data: bytes) -> None:
        ccore.write(self.tid, addr, data)


class NotifiedCall(TrappedCall):
    """A call of the notifying filter (mount family, control calls): the
    caller waits in the kernel, not in a ptrace stop, so it can only be
    answered with a value or let run (None)."""

    __slots__ = ("listener", "id")

    def __init__(self, tracer, thread: Thread, ev):
        super().__init__(tracer, thread, ev)
        self.data = seccomp_filter.data_of(ev.arch, ev.nr)
        self.listener = ev.status
        self.id = ev.msg


class SyscallStop(TrappedCall):
    """One trapped call, handed to the handler while the thread is stopped.

    The handler may change arguments (set_arg, with strings placed by
    scratch) and ask to see the result (on_exit); the tracer then resumes
    to the exit stop, calls the hook and puts the registers back, since the
    syscall ABI promises the caller that they survive the call.
    """

    __slots__ = ("sp", "_scratch")

    def __init__(self, tracer, thread: Thread, ev):
        super().__init__(tracer, thread, ev)
        self.sp = ev.sp
        # from the registers (the ABI the call came in by), never from
        # SECCOMP_RET_DATA: a tracee's own filter can return TRACE with
        # any data it likes
        self.data = seccomp_filter.data_of(ev.arch, ev.nr)
        self._scratch = ev.sp - 128     # below the red zone, grows down

    def scratch(self, data: bytes) -> int:
        """Copy data into the tracee's stack, below the red zone."""
        self._scratch = (self._scratch - len(data)) & ~15
        ccore.write(self.tid, self._scratch, data)
        return self._scratch

    def set_arg(self, index: int, value: int) -> None:
        self.new_args[index] = value & U64

    def on_exit(self, hook) -> None:
        """hook(result) -> new result or None, called at the exit stop."""
        self.exit_hook = hook

    def run(self, nr: int, *args: int) -> int | None:
        """From an exit hook only: make the thread run one more syscall."""
        return self.tracer.run_syscall(self.thread, nr, args)

    def tighten(self, trapped: frozenset[int], on_fds: frozenset[int] | None = None) -> None:
        """From an exit hook only: trap more in this process from now on
        (with on_fds: only calls naming one of those descriptors)."""
        self.tracer.tighten_process(self.thread, trapped, on_fds)


class Tracer:
    def __init__(self, handler, lock=None, busy_workers=None):
        """lock: the handler's, held while it runs (if it has workers);
        busy_workers(): do they work now (the loop then wakes up to see)."""
        self.handler = handler
        self.threads: dict[int, Thread] = {}
        self.processes: dict[int, Process] = {}
        self.filters: list[bytes] = []          # the tracing ones, by level
        # poll before sleeping in waitpid: a stop wakes a sleeping tracer
        # through an idle CPU, tens of microseconds on a VM; trap-heavy work
        # ran 2-3x faster with 50 us here (docs/performance.md)
        ccore.lib.umvu_set_spin(int(os.environ.get("UMVU_SPIN_US", "50")) * 1000)
        # what happened to threads before their creator's clone event was
        # seen (waitpid reports in no particular order): tid -> [(kind, item)]
        self._early: dict[int, list] = {}
        # exits of unknown tids once the view is traced: a thread that died
        # before its clone event was seen (or a process attach_all could not
        # seize); kept a few seconds, so that a reused pid is not taken for it
        self._early_exits: dict[int, tuple[float, tuple]] = {}
        #: True once the view's processes are ptraced (attach_all); before,
        #: only the notifying filter watches them
        self.attached = False
        self.notifying = seccomp_filter.notifying()
        self.trapped = seccomp_filter.trapped_numbers()    # what it traps
        #: what some processes trap beyond that (tighten_process): the C
        #: core needs rows for these numbers too
        self.tightened: frozenset[int] = frozenset()
        self._fast_events = 0
        # the view stays our descendants, so that attach_all finds it and
        # umvu waits for daemons, and SIGCHLD wakes the loop (umvu_wait)
        ccore.check(ccore.lib.umvu_wait_init())
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self._event = ccore.new_event()
        self.on_trace = None                    # callable(stop, result) for --trace
        self.current_thread: Thread | None = None   # the one in on_syscall
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.completions: queue.SimpleQueue = queue.SimpleQueue()
        self.deferred = 0
        self.busy_workers = busy_workers or (lambda: False)
        #: callable(process) run at an exec stop, before the new program's
        #: first instruction (umvu.vdso); while set, exec events reach Python
        self.exec_hook = None

    def describe(self) -> str:
        """The tables, for a person debugging a stuck view."""
        early = {tid: [kind for kind, _ in items] for tid, items in self._early.items()}
        return (f"attached={self.attached} "
                f"processes={sorted(self.processes)} threads={sorted(self.threads)} "
                f"early={early} deferred={self.deferred} "
                f"fast_events={self._fast_events} level={self.level} "
                f"fast={ccore.stats()} "
                f"levels={[(p.pid, p.level) for p in self.processes.values()]}")

    # ---- filters ---------------------------------------------------------
    @property
    def level(self) -> int:
        return len(self.filters) - 1

    def set_trapped(self, trapped: frozenset[int]) -> None:
        """Trap at least these numbers from now on in every process.

        Filters stack and never loosen: only growth installs a new filter.
        The current thread (stopped in a seccomp stop) is handled by the
        caller of on_syscall after it answers; every other process is
        interrupted now so it cannot run on with the old filter.
        """
        if trapped <= self.trapped:
            return
        self.trapped = trapped | self.trapped
        self.filters.append(seccomp_filter.build(self.trapped))
        if not self.attached:
            self.attach_all()
        current = self.current_thread
        for proc in self.processes.values():
            if proc.level < self.level and (current is None
                                            or proc is not current.process):
                self._interrupt(proc)
        self._update_fast_events()

    def _update_fast_events(self) -> None:
        """Let the C core handle process events alone only while no process
        waits for a filter (a new child would inherit the old one)."""
        self._fast_events = int(self.exec_hook is None and all(
            p.level == self.level for p in self.processes.values()))
        ccore.lib.umvu_set_fast_events(self._fast_events)

    def _interrupt(self, proc: Process) -> None:
        for thread in proc.threads.values():
            if thread.listening:
                continue            # group-stopped: filtered when continued
            if ccore.try_ptrace(ccore.PTRACE_INTERRUPT, thread.tid) == 0:
                thread.interrupted = True
                return

    # ---- starting processes ---------------------------------------------
    def spawn(self, path: str, argv: list[str], env: dict[str, str],
              default_signals: list[int]) -> Process:
        bpf = self.filters[-1] if self.attached else None
        pid, listener = ccore.spawn(path, argv, env, self.notifying, bpf,
                                    default_signals)
        if listener >= 0:
            ccore.check(ccore.lib.umvu_add_listener(listener))
        proc = Process(pid, None, self.level)
        self._add_thread(pid, proc).traced = self.attached
        self.processes[pid] = proc
        self._update_fast_events()
        return proc

    def attach_all(self) -> None:
        """The first filter that needs ptrace: seize every process of the
        view (our descendants: we are their subreaper) and every thread.
        Repeat until a round finds nobody new, since the unseized fork on.
        Each is then interrupted by set_trapped and filtered at its stop."""
        self.attached = True
        failed: set[int] = set()
        refused: list[str] = []
        while True:
            found = [(pid, ppid, tid) for pid, ppid in procinfo.descendants(os.getpid())
                     for tid in procinfo.tasks(pid)
                     if tid not in failed and not (
                         tid in self.threads and self.threads[tid].traced)]
            if not found:
                break
            for pid, ppid, tid in found:
                err = ccore.try_ptrace(ccore.PTRACE_SEIZE, tid, 0, ccore.OPTIONS)
                if err < 0:
                    failed.add(tid)
                    if err != -errno.ESRCH and not procinfo.is_dead(tid):
                        refused.append(f"{tid} ({os.strerror(-err)})")
                    continue
                thread = self.threads.get(tid)
                if thread is None:
                    proc = self.processes.get(pid)
                    if proc is None:
                        proc = Process(pid, self.processes.get(ppid), -1)
                        self.processes[pid] = proc
                    thread = self._add_thread(tid, proc)
                thread.traced = True
        if refused:
            log.error("cannot trace %s (another tracer?): outside the view",
                      ", ".join(refused))
        log.debug("attached: %s", self.describe())

    def _add_thread(self, tid: int, proc: Process) -> Thread:
        thread = Thread(tid, proc)
        proc.threads[tid] = thread
        self.threads[tid] = thread
        return thread

    # ---- the loop ----------------------------------------------------------
    def run(self, until=lambda: False, watch: "Process | None" = None) -> None:
        """Serve events until no tracee is left or `until()` is true. Until
        `watch` exits, other exits need not wake Python (they are journaled)."""
        ev = self._event
        watch_pid = watch.pid if watch is not None else 0
        while not until():
            ccore.lib.umvu_set_watch(watch_pid, watch is None or watch.exited,
                                     bool(self._early))
            timeout = 2000 if self.deferred or self.busy_workers() else -1
            ret = ccore.lib.umvu_wait(ev, timeout)
            with self.lock:
                self._replay()
                self._complete_deferred()
                self.handler.on_replayed()
                if ret in (-errno.EINTR, -errno.EAGAIN):
                    continue
                if ret == -errno.ECHILD and not self.deferred:
                    return
                if ret == -errno.ECHILD:
                    continue
                ccore.check(ret)
                if ev.kind != ccore.EV_JOURNAL_FULL:
                    self._dispatch(ev)

    # ---- calls answered later, by a worker thread ----------------------------
    def post(self, stop: "SyscallStop", result) -> None:
        """From a worker: the deferred stop is answered (see DEFER)."""
        self.completions.put((stop, result))
        ccore.lib.umvu_poke()

    def call_soon(self, func, *args) -> "queue.SimpleQueue":
        """From a worker: run func on the tracer's thread (ptrace requests
        belong to it). Returns a queue that will receive (result, error)."""
        reply = queue.SimpleQueue()
        self.completions.put((None, (func, args, reply)))
        ccore.lib.umvu_poke()
        return reply

    def _complete_deferred(self) -> None:
        while not self.completions.empty():
            stop, result = self.completions.get()
            if stop is None:                    # a call_soon
                func, args, reply = result
                try:
                    reply.put((func(*args), None))
                except Exception as exc:        # handed to the worker
                    reply.put((None, exc))
                continue
            self.deferred -= 1
            if isinstance(stop, NotifiedCall):
                self._reply(stop, result)
            elif self.threads.get(stop.tid) is stop.thread:
                self._finish(stop, result)

    def _replay(self) -> None:
        """Book-keep the process events the C core handled on its own."""
        for entry in ccore.journal_take():
            self._apply(entry)

    def _apply(self, entry) -> None:
        kind, tid, msg, flags, status = entry[:5]
        thread = self.threads.get(tid)
        if kind in ccore.FD_EVENTS:
            if thread is None:          # a child Python has not met yet
                self._early.setdefault(tid, []).append(("journal", entry))
            else:
                self.handler.on_fd_event(thread.process, kind, status, msg, flags,
                                         entry[5] if len(entry) > 5 else None)
            return
        if thread is None and kind == ccore.EV_EXITED:
            self._early_exit(tid, ("journal", entry))
        elif thread is None:
            self._early.setdefault(tid, []).append(("journal", entry))
        elif kind == ccore.EV_CLONE:
            self._run_early(self._record_clone(thread, msg, flags))
        elif kind == ccore.EV_EXEC:
            self._record_exec(thread, msg)
        else:
            self._on_exited(thread, status)

    def _run_early(self, items) -> None:
        for kind, item in items:
            if kind == "journal":
                self._apply(item)
            else:
                self._dispatch(item)

    def _early_exit(self, tid: int, item) -> None:
        if not self.attached:
            return                      # an untraced process: nobody to tell
        now = time.monotonic()
        while self._early_exits and (len(self._early_exits) > 4096 or now - next(
                iter(self._early_exits.values()))[0] > EARLY_EXIT_TTL):
            del self._early_exits[next(iter(self._early_exits))]
        self._early_exits[tid] = (now, item)

    def _dispatch(self, ev) -> None:
        tid = ev.tid
        kind = ev.kind
        if kind == ccore.EV_NOTIF:
            self._on_notif(ev)
            return
        thread = self.threads.get(tid)
        if thread is None:
            if kind == ccore.EV_EXITED:
                self._early_exit(tid, ("event", _copy_event(ev)))
                return
            # a new child may stop before its parent reports the clone
            self._early.setdefault(tid, []).append(("event", _copy_event(ev)))
            return
        if kind == ccore.EV_SECCOMP:
            self._on_seccomp(thread, ev)
        elif kind == ccore.EV_SIGNAL:
            ccore.try_ptrace(ccore.PTRACE_CONT, tid, 0, ev.sig)
        elif kind == ccore.EV_STOP:
            self._on_stop(thread, ev.sig)
        elif kind == ccore.EV_CLONE:
            self._on_clone(thread, ev.msg)
        elif kind == ccore.EV_EXEC:
            self._on_exec(thread, ev.msg)
        elif kind == ccore.EV_EXITED:
            self._on_exited(thread, ev.status)
        elif kind == ccore.EV_SYSCALL_EXIT:
            self._on_syscall_exit(thread, ev.rval)
        else:   # exit stop, vfork done, stray syscall stops
            ccore.try_ptrace(ccore.PTRACE_CONT, tid)

    def _on_seccomp(self, thread: Thread, ev) -> None:
        stop = SyscallStop(self, thread, ev)
        self.current_thread = thread
        try:
            result = self.handler.on_syscall(stop)
        finally:
            self.current_thread = None
        if result is DEFER:
            self.deferred += 1          # stays stopped until post()
            return
        self._finish(stop, result)

    def _on_notif(self, ev) -> None:
        thread = self.threads.get(ev.tid) or _stranger(ev.tid)
        call = NotifiedCall(self, thread, ev)
        result = self.handler.on_syscall(call)
        if result is DEFER:
            self.deferred += 1
            return
        self._reply(call, result)

    def _reply(self, call: NotifiedCall, result) -> None:
        if self.on_trace is not None:
            self.on_trace(call, result)
        err = ccore.lib.umvu_notif_reply(call.listener, call.id,
                                         0 if result is None else result,
                                         int(result is None))
        if err < 0 and err != -errno.ENOENT:    # ENOENT: the caller is gone
            log.error("notification reply to %d: %s", call.tid, os.strerror(-err))

    def _finish(self, stop: "SyscallStop", result) -> None:
        """Answer (or let run) a trapped call and resume its thread."""
        thread = stop.thread
        if self.on_trace is not None:
            self.on_trace(stop, result)
        tid = thread.tid
        pending = thread.process.level < self.level
        if result is not None:
            ccore.check(ccore.lib.umvu_set_result(tid, result))
            if pending:     # a skipped call reaches its exit stop at once
                self._filter_at_seccomp_stop(thread)
                return
        elif stop.new_args or stop.exit_hook:
            self._run_to_exit(thread, stop)
            return
        if pending:
            self._interrupt(thread.process)   # the call may block: later
        ccore.try_ptrace(ccore.PTRACE_CONT, tid)

    def _run_to_exit(self, thread: Thread, stop: SyscallStop) -> None:
        regs = ccore.getregs(thread.tid)
        saved = tuple(getattr(regs, r) for r in ARG_REGS)
        for index, value in stop.new_args.items():
            setattr(regs, ARG_REGS[index], value)
        if stop.new_args:
            ccore.setregs(thread.tid, regs)
        thread.exit_hook = (stop.exit_hook, saved if stop.new_args else None)
        if thread.process.level < self.level:
            self._interrupt(thread.process)
        ccore.try_ptrace(ccore.PTRACE_SYSCALL, thread.tid)

    def _on_syscall_exit(self, thread: Thread, rval: int) -> None:
        hook, saved = thread.exit_hook or (None, None)
        thread.exit_hook = None
        result = None
        if hook is not None:
            try:
                result = hook(signed(rval))
            except Exception:
                log.exception("exit hook failed")
        if result is not None or saved is not None:
            regs = ccore.getregs(thread.tid)
            if result is not None:
                regs.rax = result & U64
            if saved is not None:
                for name, value in zip(ARG_REGS, saved):
                    setattr(regs, name, value)
            ccore.setregs(thread.tid, regs)
        ccore.try_ptrace(ccore.PTRACE_CONT, thread.tid)

    def _on_stop(self, thread: Thread, sig: int) -> None:
        if sig in STOP_SIGNALS:         # group stop: stay stopped until SIGCONT
            thread.listening = True
            ccore.try_ptrace(ccore.PTRACE_LISTEN, thread.tid)
            return
        thread.listening = False
        thread.interrupted = False
        if thread.process.level < self.level:
            self._install_filter(thread, restart=True)
        ccore.try_ptrace(ccore.PTRACE_CONT, thread.tid)

    def _on_clone(self, thread: Thread, child_tid: int) -> None:
        early = self._record_clone(thread, child_tid,
                                   ccore.lib.umvu_clone_flags(thread.tid))
        ccore.try_ptrace(ccore.PTRACE_CONT, thread.tid)
        self._run_early(early)

    def _record_clone(self, thread: Thread, child_tid: int, flags: int) -> list:
        """A new thread or process; returns its stops that came early."""
        parent = thread.process
        if flags & CLONE_THREAD:
            proc = parent
        else:
            proc = Process(child_tid, parent, parent.level)
            self.processes[child_tid] = proc
        self._add_thread(child_tid, proc)
        if proc is not parent:
            self.handler.on_new_process(parent, proc, flags)
        else:
            self.handler.on_new_thread(proc, child_tid)
        early = self._early.pop(child_tid, [])
        seen, item = self._early_exits.pop(child_tid, (0.0, None))
        if item is not None and time.monotonic() - seen <= EARLY_EXIT_TTL:
            early.append(item)
        return early

    def _on_exec(self, thread: Thread, former_tid: int) -> None:
        thread = self._record_exec(thread, former_tid)
        if self.exec_hook is not None:
            try:
                self.exec_hook(thread.process)
            except Exception:
                log.exception("exec hook failed")
        ccore.try_ptrace(ccore.PTRACE_CONT, thread.tid)

    def _record_exec(self, thread: Thread, former_tid: int) -> Thread:
        """After exec only the execing thread is left, with the leader's tid."""
        proc = thread.process
        execing = self.threads.get(former_tid, thread)
        for tid in proc.threads:
            self.threads.pop(tid, None)
            ccore.lib.umvu_forget_thread(tid)
        proc.threads.clear()
        execing.tid = proc.pid
        self.threads[proc.pid] = execing
        proc.threads[proc.pid] = execing
        proc.syscall_insn = None
        execing.exit_hook = None        # a successful exec has no exit stop
        self.handler.on_exec(proc)
        return execing

    def _on_exited(self, thread: Thread, status: int) -> None:
        proc = thread.process
        ccore.lib.umvu_forget_thread(thread.tid)
        self.threads.pop(thread.tid, None)
        proc.threads.pop(thread.tid, None)
        if not proc.threads and not proc.exited:
            proc.exited = True
            proc.status = status
            self.processes.pop(proc.pid, None)
            self.handler.on_exit(proc)
        elif proc.pid == thread.tid:
            proc.status = status

    # ---- running a syscall inside a tracee -----------------------------------
    def _filter_at_seccomp_stop(self, thread: Thread) -> None:
        """The call was answered and skipped: take it to its exit stop, then
        install the filter from there."""
        ccore.try_ptrace(ccore.PTRACE_SYSCALL, thread.tid)
        if not self._wait_exit_stop(thread):
            return
        self._install_filter(thread, restart=False)
        ccore.try_ptrace(ccore.PTRACE_CONT, thread.tid)

    def tighten_process(self, thread: Thread, trapped: frozenset[int],
                        on_fds: frozenset[int] | None = None) -> None:
        """From an exit stop: one more filter for this process (and the
        children it will have) only; with on_fds, one that stops the calls
        naming those descriptors only."""
        bpf = seccomp_filter.build(trapped | self.trapped) if on_fds is None \
            else seccomp_filter.build_on_fds(trapped, frozenset(on_fds))
        self._install_filter(thread, restart=False, bpf=bpf)
        if not trapped <= self.trapped | self.tightened:
            self.tightened |= trapped
            self.handler.on_tightened()

    def _install_filter(self, thread: Thread, restart: bool, bpf=None) -> None:
        proc = thread.process
        private = bpf is not None
        bpf = bpf or self.filters[self.level]
        try:
            sp = ccore.getregs(thread.tid).rsp
            prog = (sp - 128 - len(bpf)) & ~15
            fprog = prog - 16
            ccore.write(thread.tid, prog, bpf)
            ccore.write(thread.tid, fprog, struct.pack("HxxxxxxQ", len(bpf) // 8, prog))
            res = self.run_syscall(thread, NR_SECCOMP,
                                   (SECCOMP_SET_MODE_FILTER,
                                    SECCOMP_FILTER_FLAG_TSYNC, fprog),
                                   restart, stack=fprog - 64)
        except OSError as exc:
            log.error("cannot tighten the filter of %d: %s", proc.pid, exc)
            return
        if res is None:
            return
        if res != 0:
            log.error("seccomp in %d returned %d", proc.pid, res)
        if not private:
            proc.level = self.level
            self._update_fast_events()

    def run_syscall(self, thread: Thread, nr: int, args: tuple,
                    restart: bool = False, stack: int | None = None) -> int | None:
        """Make a stopped thread execute syscall nr(*args) and come back.

        The thread must be at a syscall-exit stop or an interrupt stop.
        Registers are restored afterwards; with `restart`, a blocking call
        the interrupt broke off is restarted by hand. `stack` moves the stack
        pointer below data the caller placed there. Returns the result, or
        None when the thread died meanwhile.
        """
        tid = thread.tid
        saved = ccore.getregs(tid)
        regs = ccore.copy_regs(saved)
        regs.rip = self._syscall_insn(thread, saved)
        regs.rax = nr
        regs.orig_rax = U64
        for name, value in zip(ARG_REGS, args):
            setattr(regs, name, value & U64)
        if stack is not None:
            regs.rsp = stack
        ccore.setregs(tid, regs)
        pending_signals = []
        ccore.ptrace(ccore.PTRACE_SYSCALL, tid)
        ev = ccore.new_event()
        while True:
            ccore.check(ccore.lib.umvu_wait_tid(tid, ev))
            if ev.kind == ccore.EV_SYSCALL_EXIT:
                result = signed(ev.rval)
                break
            if ev.kind == ccore.EV_EXITED:
                self._on_exited(thread, ev.status)
                return None
            if ev.kind == ccore.EV_SIGNAL:
                pending_signals.append(ev.sig)
            ccore.ptrace(ccore.PTRACE_SYSCALL, tid)
        if restart:
            _fix_restart(saved, tid)
        ccore.setregs(tid, saved)
        for sig in pending_signals:
            _tgkill(thread.process.pid, tid, sig)
        return result

    def _wait_exit_stop(self, thread: Thread) -> bool:
        ev = ccore.new_event()
        while True:
            if ccore.lib.umvu_wait_tid(thread.tid, ev) < 0:
                return False
            if ev.kind == ccore.EV_SYSCALL_EXIT:
                return True
            if ev.kind == ccore.EV_EXITED:
                self._on_exited(thread, ev.status)
                return False
            ccore.try_ptrace(ccore.PTRACE_SYSCALL, thread.tid,
                             0, ev.sig if ev.kind == ccore.EV_SIGNAL else 0)

    def _syscall_insn(self, thread: Thread, regs) -> int:
        """Address of a `syscall` instruction in the tracee (vDSO first)."""
        proc = thread.process
        if proc.syscall_insn is None:
            proc.syscall_insn = _find_syscall_insn(thread.tid)
        if proc.syscall_insn is None:
            if signed(regs.orig_rax) >= 0:
                return regs.rip - 2
            raise OSError(errno.ENOEXEC, "no syscall instruction found")
        return proc.syscall_insn


def _fix_restart(regs, tid: int) -> None:
    """An interrupted call would be restarted by the kernel's signal code;
    we resumed through a syscall-exit stop instead, so do it here. The
    control calls too, which the kernel never restarts (negative numbers):
    one broken off before the hypervisor took its notification."""
    nr = signed(regs.orig_rax)
    if nr < 0 and nr not in syscall_table.CONTROL_CALLS:
        return
    if nr < 0:      # -1 is also "not in a call": it must have just returned
        try:
            if ccore.read(tid, regs.rip - 2, 2) != b"\x0f\x05":
                return
        except OSError:
            return
    err = -signed(regs.rax)
    if err in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
        regs.rax = regs.orig_rax
        regs.rip -= 2
    elif err == ERESTART_RESTARTBLOCK:
        regs.rax = NR_RESTART
        regs.rip -= 2


def _find_syscall_insn(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return None
    wanted = [l for l in lines if l.endswith("[vdso]")]
    wanted += [l for l in lines if " r-xp " in l and "libc" in l]
    for line in wanted:
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        try:
            code = ccore.read(tid, start, min(end - start, 1 << 20))
        except OSError:
            continue
        pos = code.find(b"\x0f\x05")
        if pos >= 0:
            return start + pos
    return None


def _tgkill(tgid: int, tid: int, sig: int) -> None:
    _libc.syscall(syscall_table.NR["tgkill"], tgid, tid, sig)


class _SavedEvent:
    __slots__ = ("tid", "kind", "status", "event", "sig", "msg", "arch",
                 "ret_data", "nr", "args", "ip", "sp", "rval")


def _copy_event(ev) -> _SavedEvent:
    saved = _SavedEvent()
    for name in _SavedEvent.__slots__:
        value = getattr(ev, name)
        setattr(saved, name, tuple(value) if name == "args" else value)
    return saved



def _stranger(tid: int) -> Thread:
    """A caller the tracer does not trace (before attach_all, or one that
    another tracer holds): a Thread of a Process of its own, in no table."""
    thread = Thread(tid, Process(procinfo.tgid(tid), None, -1))
    thread.traced = False
    return thread
