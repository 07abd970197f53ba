"""The architecture the layout promises, checked: the streaming side and the NumPy imaging
modules never import OpenCL, the restoration core never imports Kafka, the product never
imports the development broker, the camera and the sink run — against the real broker — in a
Python where pyopencl cannot be imported, and so do the streaming tests."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "streamer"


def modules(group: str) -> list[str]:
    folder = PACKAGE / group
    return sorted(f"streamer.{group}.{path.stem}" for path in folder.glob("*.py")
                  if path.stem != "__init__")


def blocked_python(tmp_path: Path, *blocked: str) -> dict[str, str]:
    """An environment whose Python cannot import ``blocked`` (as on a machine without them)."""
    site = tmp_path / "blocked-site"
    site.mkdir(exist_ok=True)
    lines = [f"sys.modules[{name!r}] = None" for name in blocked]
    (site / "sitecustomize.py").write_text("import sys\n" + "\n".join(lines) + "\n")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def import_all(names: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import importlib\nfor name in %r:\n    importlib.import_module(name)\n" % names
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_the_blocker_blocks(tmp_path):
    result = import_all(["pyopencl"], blocked_python(tmp_path, "pyopencl"))
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr


def test_streaming_imaging_and_foundations_load_without_opencl(tmp_path):
    names = (modules("streaming") + modules("imaging")
             + ["streamer", "streamer.errors", "streamer.settings", "streamer.metrics",
                "streamer.operations.cli", "streamer.operations.streaming_commands"])
    result = import_all(names, blocked_python(tmp_path, "pyopencl"))
    assert result.returncode == 0, result.stderr


def test_restoration_core_loads_without_kafka(tmp_path):
    result = import_all(modules("restoration"), blocked_python(tmp_path, "aiokafka"))
    assert result.returncode == 0, result.stderr


def test_imaging_and_sources_are_numpy_only(tmp_path):
    result = import_all(modules("imaging") + modules("sources"),
                        blocked_python(tmp_path, "pyopencl", "aiokafka"))
    assert result.returncode == 0, result.stderr


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("lower, higher", [
    ("imaging", ("streamer.restoration", "streamer.streaming", "streamer.worker",
                 "streamer.operations", "streamer.sources")),
    ("sources", ("streamer.restoration", "streamer.streaming", "streamer.worker",
                 "streamer.operations")),
    ("restoration", ("streamer.streaming", "streamer.worker", "streamer.operations")),
    ("streaming", ("streamer.restoration", "streamer.worker", "streamer.operations")),
    ("worker", ("streamer.operations",)),
])
def test_a_lower_layer_never_imports_a_higher_one(lower, higher):
    offenders = {
        f"{path.name} imports {name}"
        for path in (PACKAGE / lower).glob("*.py")
        for name in _imports(path) if name.startswith(higher)
    }
    assert not offenders, offenders


@pytest.mark.parametrize("group", ["streaming", "worker", "restoration", "imaging", "sources"])
def test_the_product_never_imports_the_development_broker(group):
    offenders = {
        f"{path.name} imports {name}"
        for path in (PACKAGE / group).rglob("*.py")
        for name in _imports(path) if name.startswith("streamer.local_broker")
    }
    assert not offenders, offenders


def test_the_development_broker_imports_no_product_layer():
    offenders = {
        f"{path.name} imports {name}"
        for path in (PACKAGE / "local_broker").glob("*.py")
        for name in _imports(path)
        if name.startswith(("streamer.streaming", "streamer.worker", "streamer.restoration",
                            "streamer.operations", "streamer.imaging"))
    }
    assert not offenders, offenders


def test_commands_load_the_development_broker_only_to_start_one(tmp_path):
    # `streamer worker` parses its command line and builds its settings without the broker;
    # only the table of releases (for `streamer kafka --help`) comes with the parser.
    code = textwrap.dedent("""
        import sys
        from streamer.operations.cli import build_parser
        from streamer.operations.cli_options import settings_from
        settings_from(build_parser().parse_args(["worker", "--window", "7"]))
        print(sorted(name for name in sys.modules if name.startswith("streamer.local_broker")))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['streamer.local_broker', 'streamer.local_broker.versions']"


def test_streaming_tests_run_where_pyopencl_does_not_import(tmp_path):
    # The conftest chain of tests/streaming holds no OpenCL fixture (those live in
    # tests/restoration/conftest.py), so the pure streaming tests run without pyopencl.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/streaming/test_framing.py",
         "tests/streaming/test_messages.py", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, env=blocked_python(tmp_path, "pyopencl"), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 20, summary
    assert "skipped" not in summary and "error" not in summary, summary


def test_errors_live_in_one_module():
    defined = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and any(
            getattr(base, "id", "").endswith("Error") for base in node.bases)
    }
    assert defined == {"errors.py"}, defined


@pytest.mark.kafka
def test_camera_and_sink_run_where_pyopencl_does_not_import(kafka_bootstrap, tmp_path):
    import asyncio

    from streamer.restoration.restorer import Restorer
    from streamer.streaming.topics import create_topics
    from streamer.worker.worker import Worker
    from tests.kafka_support import FAST_RESTORATION, settings_env, unique_settings

    settings = unique_settings(kafka_bootstrap, partitions=1)
    asyncio.run(create_topics(settings))
    env = {**settings_env(settings), **blocked_python(tmp_path, "pyopencl")}
    env["PYTHONPATH"] = blocked_python(tmp_path, "pyopencl")["PYTHONPATH"]
    streamer = [sys.executable, "-m", "streamer"]
    camera = subprocess.run([*streamer, "camera", "--simulate", "--count", "3", "--size", "64",
                             "--cadence", "0", "--camera-id", "opencl-free"],
                            env=env, capture_output=True, text=True, timeout=180)
    assert camera.returncode == 0, camera.stderr
    assert "published 3 frames" in camera.stdout

    async def restore_them() -> None:  # the worker is the one process that needs OpenCL
        await asyncio.wait_for(Worker(settings, Restorer(FAST_RESTORATION)).run(
            asyncio.Event(), max_frames=3), 120)

    asyncio.run(restore_them())
    archive = tmp_path / "archive"
    sink = subprocess.run([*streamer, "sink", "--out", str(archive), "--expect", "3"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert sink.returncode == 0, sink.stderr
    assert len(list((archive / "output").rglob("*.fits"))) == 3
    assert len(list((archive / "input").rglob("*.fits"))) == 3
    assert "pyopencl" not in sink.stderr + camera.stderr, textwrap.shorten(sink.stderr, 500)


def _code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring."""
    lines = function.end_lineno - function.lineno + 1
    docstring = function.body[0]
    if (isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
            and isinstance(docstring.value.value, str)):
        lines -= docstring.end_lineno - docstring.lineno + 1
    return lines


def test_no_function_is_over_sixty_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > 60:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} "
                            f"({_code_lines(node)} lines)")
    assert not long, "split these: " + ", ".join(long)


MODULE_LINES, CLASS_LINES = 450, 250


def test_modules_and_classes_stay_small():
    """A module past ~450 lines or a class past ~250 is two things (STYLE.md)."""
    large = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > MODULE_LINES:
            large.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > CLASS_LINES:
                large.append(f"{path.relative_to(PACKAGE)}:{node.lineno} class {node.name} "
                             f"({node.end_lineno - node.lineno + 1} lines)")
    assert not large, "split these: " + ", ".join(large)


def test_the_device_is_reached_through_one_session():
    """Only the device session creates an OpenCL context or a kernel library, and only the
    kernel library builds programs and kernels (the probe's own build aside)."""
    makers = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("cl.Context", "KernelLibrary", "cl.Program", "cl.Kernel"):
                    makers.setdefault(name, set()).add(path.relative_to(PACKAGE).as_posix())
    assert makers.get("cl.Context") == {"restoration/device.py"}, makers
    assert makers.get("KernelLibrary") == {"restoration/device.py"}, makers
    assert makers.get("cl.Program", set()) <= {"restoration/device.py",
                                               "restoration/kernels.py"}, makers
    assert makers.get("cl.Kernel") == {"restoration/kernels.py"}, makers
