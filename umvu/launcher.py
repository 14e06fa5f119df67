"""Quick-starting console scripts: `python -m umvu.launcher [BIN_DIR]`.

pip's console scripts run the interpreter with `site`, which here costs
about 13 ms before umvu's first line (an editable install's `.pth` finder
imports pathlib, importlib.util...), and Python's own finalization another
5 ms after the view has ended: together more than the rest of `umvu true`.
This rewrites the scripts of umvu's commands in BIN_DIR (default: the
directory of this interpreter) as launchers that

  * run `python -S` and put on sys.path, in the same place, the
    directories `site` would have added (recorded now);
  * find `umvu` and `umvu.modules` where they are now, through a finder of
    a few lines (for an editable install; a wheel's are found anyway);
  * after main() returns, do what the interpreter's exit does that can
    matter (joining threads, atexit functions, flushing stdout/stderr) and
    leave with os._exit.

`make venv` runs it after `pip install -e`; a reinstall by pip writes the
plain scripts again, which work the same, only slower to start.
"""

from __future__ import annotations

import os
import sys

TEMPLATE = '''#!{python} -S
# {name}: written by `python -m umvu.launcher` (see umvu/launcher.py): python
# without site (start-up time), sys.path as site makes it, a quick exit
import sys
sys.path.extend({site_dirs!r})


class _UmvuPackages:
    """umvu and umvu.modules, where the install put them."""
    where = {mapping!r}

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        parent = cls.where.get(name)
        if parent is None:
            return None
        from importlib.machinery import PathFinder
        return PathFinder.find_spec(name, [parent])


sys.meta_path.insert(0, _UmvuPackages)
sys.argv[0] = sys.argv[0].removesuffix(".exe")
from {module} import {func}
from umvu.launcher import finish
finish({func})
'''


def finish(main) -> None:
    """sys.exit(main()), with a quick exit once main has returned."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()           # non-daemon threads, as at exit
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout:
                status = status or 120  # as Python does when it cannot flush
    os._exit(status & 0xFF)


def _scripts() -> dict[str, str]:
    """console script name -> "module:function", from umvu's metadata."""
    from importlib.metadata import distribution
    return {ep.name: ep.value for ep in distribution("umvu").entry_points
            if ep.group == "console_scripts"}


def _site_dirs() -> list[str]:
    """The sys.path entries `site` added to this interpreter."""
    import subprocess
    bare = subprocess.run([sys.executable, "-S", "-c",
                           "import sys; print('\\n'.join(sys.path))"],
                          capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items()
                               if k != "PYTHONPATH"}).stdout.splitlines()
    return [p for p in sys.path if p and p not in bare and os.path.isdir(p)
            and p != os.getcwd()]


def _mapping() -> dict[str, str] | None:
    import umvu
    import umvu.modules
    where = {}
    for name, pkg in (("umvu", umvu), ("umvu.modules", umvu.modules)):
        directory = os.path.dirname(os.path.abspath(pkg.__file__))
        if os.path.basename(directory) != name.rpartition(".")[2]:
            return None             # the finder could not find it by name
        where[name] = os.path.dirname(directory)
    return where


def write(bin_dir: str) -> list[str]:
    mapping = _mapping()
    if mapping is None:
        return []
    site_dirs = _site_dirs()
    written = []
    for name, value in sorted(_scripts().items()):
        module, _, func = value.partition(":")
        path = os.path.join(bin_dir, name)
        if not os.path.exists(path) or "." in func:
            continue
        text = TEMPLATE.format(python=sys.executable, name=name, module=module,
                               func=func, site_dirs=site_dirs, mapping=mapping)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        written.append(name)
    return written


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(sys.executable)
    names = write(target)
    print(f"quick launchers in {target}: {' '.join(names) or 'none'}")
