"""The wheel built from the repository ships every subpackage the source tree has.

The suite runs from an editable install, which imports from the source tree
whatever `setup.cfg` packages; only a built wheel shows what `pip install .`
or `pip install git+...` really installs.
"""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow  # a pip subprocess (a few seconds)


def _source_packages() -> set[str]:
    """Every folder of tfjoint/ that holds .py files, as a dotted package name."""
    found = set()
    for path, directories, files in os.walk(os.path.join(ROOT, "tfjoint")):
        directories[:] = [d for d in directories if d != "__pycache__"]
        if any(name.endswith(".py") for name in files):
            found.add(os.path.relpath(path, ROOT).replace(os.sep, "."))
    return found


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory) -> str:
    # A copy of the project without build/ (setuptools reuses a stale build/lib there, which would hide a
    # package it no longer finds), the venv or git.
    source = tmp_path_factory.mktemp("source") / "tfjoint"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                              "*_out", "benchmarks", "notebooks"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=600, cwd=str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    wheels = [name for name in os.listdir(out) if name.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(out, wheels[0])


@pytest.fixture(scope="module")
def wheel_names(wheel_path) -> set[str]:
    with zipfile.ZipFile(wheel_path) as archive:
        return set(archive.namelist())


def test_every_source_package_is_in_the_wheel(wheel_names):
    packaged = {os.path.dirname(name).replace("/", ".") for name in wheel_names if name.endswith(".py")}
    missing = sorted(_source_packages() - packaged)
    assert not missing, f"folders of tfjoint/ missing from the wheel (no __init__.py?): {missing}"


def test_every_source_module_is_in_the_wheel(wheel_names):
    modules = set()
    for path, directories, files in os.walk(os.path.join(ROOT, "tfjoint")):
        directories[:] = [d for d in directories if d != "__pycache__"]
        modules |= {os.path.relpath(os.path.join(path, f), ROOT).replace(os.sep, "/") for f in files
                    if f.endswith(".py")}
    assert modules <= wheel_names, sorted(modules - wheel_names)
    for module in ("tfjoint/train/prepare.py", "tfjoint/train/strip.py", "tfjoint/app/cli.py"):
        assert module in wheel_names


def test_the_console_script_points_at_a_module_in_the_wheel(wheel_path, wheel_names):
    with zipfile.ZipFile(wheel_path) as archive:
        name = next(n for n in wheel_names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = archive.read(name).decode()
    target = next(line.split("=", 1)[1].strip() for line in entry_points.splitlines() if line.startswith("tfjoint"))
    module = target.split(":")[0]
    assert module.replace(".", "/") + ".py" in wheel_names, target
