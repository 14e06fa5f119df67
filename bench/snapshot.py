"""A frozen copy of umvu for the length of a run.

The venv installs umvu in editable mode, so edits to the working tree made
while the benchmarks run (other people work on it) would change the code
between runs, or break it halfway through an edit. At the start, run.py
copies the package (with its built C core) and the built-in modules to a
scratch directory and runs umvu and its helper commands from there, through
launchers that put the copy first on sys.path (the editable finder comes
after sys.path, so the copy wins). Workloads never see that path.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.o", "*.c.orig")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"bench: cannot find the {name} package")
    return Path(list(spec.submodule_search_locations)[0])


def fingerprint(root: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and \
                p.suffix in (".py", ".so", ".c", ".h"):
            try:
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
            except OSError:
                pass
    return h.hexdigest()[:12]


def make(dest: Path, venv_bin: str) -> tuple[str, str]:
    """Copy umvu into dest; returns (umvu launcher, directory of launchers)."""
    pkg = _package_dir("umvu")
    mods = _package_dir("umvu.modules")
    lib = dest / "lib"
    shutil.copytree(pkg, lib / "umvu", ignore=IGNORE)
    if (lib / "umvu" / "modules").exists():
        shutil.rmtree(lib / "umvu" / "modules")
    shutil.copytree(mods, lib / "umvu" / "modules", ignore=IGNORE)
    # byte-compile now: with PYTHONDONTWRITEBYTECODE set every start-up
    # would compile the whole package again
    compileall.compile_dir(str(lib), quiet=1)
    bindir = dest / "bin"
    bindir.mkdir()
    for entry in os.scandir(venv_bin):
        if not entry.is_file():
            continue
        try:
            text = Path(entry.path).read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if not text.startswith("#!") or "from umvu" not in text:
            continue
        shebang, _, rest = text.partition("\n")
        launcher = bindir / entry.name
        launcher.write_text(f"{shebang}\nimport sys\n"
                            f"sys.path.insert(0, {str(lib)!r})\n{rest}")
        launcher.chmod(0o755)
    umvu = bindir / "umvu"
    if not umvu.exists():
        raise SystemExit(f"bench: no umvu launcher in {venv_bin}")
    return str(umvu), str(bindir)
