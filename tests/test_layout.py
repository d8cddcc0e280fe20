"""The package layout: what gets installed, and which way the dependencies point.

``dtrain.cli`` -> ``dtrain.launcher`` -> ``dtrain.workers`` -> ``dtrain.distributed`` -> io/data
-> nn/optim -> autograd. The library never imports the launcher or the worker runtime, so a tool
that imports dtrain (or a worker importing a job script) cannot start processes by accident.
"""

import ast
import os
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = {"dtrain/cli.py", "dtrain/__main__.py"}  # the top of the stack
RUNTIME = ("dtrain.launcher", "dtrain.workers")


def _sources(*folders):
    for folder in folders:
        for base, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(base, name)
                    yield os.path.relpath(path, ROOT).replace(os.sep, "/")


def _module_of(path: str) -> str:
    """The installed module name of a repository file (workers/ and launcher/ live in dtrain)."""
    parts = path[:-3].split("/")
    if parts[0] in ("workers", "launcher"):
        parts = ["dtrain", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: str, skip_function: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = _module_of(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == skip_function:
            skipped.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _violations(paths, forbidden, skip_function=None) -> list[str]:
    return [f"{path}:{line} imports {name}" for path in paths
            for line, name in _imports(path, skip_function)
            if name.split(".")[0] in ("workers", "launcher")
            or any(name == f or name.startswith(f + ".") for f in forbidden)]


def test_the_distributed_package_is_not_named_like_build_output():
    assert os.path.isdir(os.path.join(ROOT, "dtrain", "distributed"))
    assert not os.path.exists(os.path.join(ROOT, "dtrain", "dist"))


def test_the_library_never_imports_the_launcher_or_the_worker_runtime():
    core = [p for p in _sources("dtrain") if p not in ENTRY_POINTS]
    # dtrain.fit is the launcher's, reached through the package's lazy __getattr__ only
    assert _violations(core, RUNTIME, skip_function="__getattr__") == []


def test_the_worker_runtime_never_imports_the_launcher_or_the_cli():
    assert _violations(_sources("workers"), ("dtrain.launcher", "dtrain.cli")) == []


def test_the_launcher_never_imports_the_cli():
    assert _violations(_sources("launcher"), ("dtrain.cli",)) == []


def test_the_wire_never_imports_the_coordinator():
    wire = ["dtrain/distributed/protocol.py", "dtrain/distributed/channels.py",
            "dtrain/distributed/shared_memory.py"]
    assert _violations(wire, ("dtrain.distributed.coordinator", "dtrain.distributed.trainer")) \
        == []


def test_importing_the_library_loads_no_runtime_module():
    modules = sorted(_module_of(p) for p in _sources("dtrain") if p not in ENTRY_POINTS
                     and "/onnx/" not in p and not p.endswith("plot.py"))
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in sys.modules if m.startswith({RUNTIME!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "[]"


def test_no_process_builds_or_parses_frames_by_hand():
    runtime = ("dtrain/distributed/coordinator.py", "dtrain/distributed/sharded.py",
               "dtrain/distributed/reducer.py", "workers/worker.py", "workers/ranges.py")
    for path in runtime:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            text = f.read()
        for call in ("send_multipart", "recv_multipart", "msgpack", "P.encode(", "P.Envelope("):
            assert call not in text, f"{path} uses {call}: go through protocol.py"


def test_every_package_folder_is_installed():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    folders = {_module_of(p) for p in (*_sources("dtrain"), *_sources("workers"),
                                       *_sources("launcher"))
               if p.endswith("__init__.py")}
    assert folders == listed


@pytest.mark.skipif(os.environ.get("DTRAIN_SKIP_WHEEL") == "1", reason="DTRAIN_SKIP_WHEEL=1")
def test_pip_install_puts_only_dtrain_into_site_packages(tmp_path):
    """Build the wheel pip would install and install it into a fresh venv (no dependencies)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "wheel"), ROOT], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = (tmp_path / "wheel").iterdir()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert "dtrain/workers/worker.py" in names and "dtrain/launcher/run.py" in names
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True,
                   timeout=120)
    site = subprocess.run([str(tmp_path / "venv/bin/python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the new venv's own pip: pip run from this environment would uninstall dtrain here
    subprocess.run([str(tmp_path / "venv/bin/python"), "-m", "pip", "install", "--no-deps",
                    "-q", str(wheel)], check=True, timeout=300, capture_output=True)
    assert (tmp_path / "venv/bin/dtrain").exists()
    top = {name for name in os.listdir(site) if not name.endswith(".dist-info")
           and name not in ("__pycache__", "pip", "setuptools", "_distutils_hack",
                            "pkg_resources", "distutils-precedence.pth")}
    assert top == {"dtrain"}
