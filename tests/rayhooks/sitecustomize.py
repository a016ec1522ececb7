"""Fault and trace hooks for the Ray tests, in every process that has this folder on its PYTHONPATH.

Only the Ray tests put this folder on ``PYTHONPATH`` (``tests/test_ray_faults.py``, ``tests/test_ray_runtime.py``),
so Python imports it at start-up in the test's ``persam`` subprocesses and in the Ray workers of the runtime
those tests start. ``PERSAM_TEST_HOOKS`` names a JSON file, read at every call (a test rewrites it between
runs that share one runtime):

    {"log": FILE}        each ``persam.jobs.outputs.write_result`` call appends "write<TAB>pid<TAB>ppid<TAB>photo"
                         to FILE, each ``persam.session.store.read_bytes`` call "read<TAB>pid<TAB>ppid<TAB>photo"
                         (which process wrote which mask, how many times, and its parent: a Ray worker's raylet)
    {"barrier": K}       with "log": each process's first write waits until K processes have written one
                         (at most 120 s), so that K actors share the batches however fast the first starts
    {"fail_read": {"name": NAME, "marker": FILE}}
                         the first ``persam.session.store.read_bytes`` of a photo whose path ends with NAME
                         SIGKILLs its own process (FILE, created exclusively, holds its pid); later reads pass
    {"fail_read": {"name": NAME, "always": true}}
                         every such read logs "kill" (as "log" does) and SIGKILLs its process
    {"kill_write": NAME} each ``persam.jobs.outputs.write_result`` of a photo whose path ends with NAME logs
                         "kill" (as "log" does) and SIGKILLs its own process, every time: a photo that kills
                         every worker it reaches

The modules are patched when they are first imported (an import hook), so processes that never import persam
(Ray's own helper processes) load nothing of it.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import signal
import sys
import time

CONFIG = os.environ.get("PERSAM_TEST_HOOKS")


def _config() -> dict:
    try:
        with open(CONFIG) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _log(kind: str, path) -> None:
    log = _config().get("log")
    if log:
        with open(log, "a") as f:  # one short line per write(): appends of concurrent processes do not mix
            f.write(f"{kind}\t{os.getpid()}\t{os.getppid()}\t{path}\n")


_PASSED: list = []


def _barrier() -> None:
    """With ``"barrier": K``: a process's first write waits until K processes have written (at most 120 s)."""
    config = _config()
    wanted, log = config.get("barrier"), config.get("log")
    if not wanted or not log or _PASSED:
        return
    _PASSED.append(True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with open(log) as f:
            writers = {line.split("\t")[1] for line in f if line.startswith("write\t")}
        if len(writers) >= wanted:
            return
        time.sleep(0.2)


def _patch_outputs(module) -> None:
    real = module.write_result

    def write_result(root, path, *args, **kwargs):
        doomed = _config().get("kill_write")
        if doomed and str(path).endswith(doomed):
            _log("kill", path)
            os.kill(os.getpid(), signal.SIGKILL)
        done = real(root, path, *args, **kwargs)
        _log("write", path)
        _barrier()
        return done

    module.write_result = write_result


def _patch_store(module) -> None:
    real = module.read_bytes

    def read_bytes(path):
        _log("read", path)
        fail = _config().get("fail_read")
        if fail and str(path).endswith(fail["name"]):
            if fail.get("always"):
                _log("kill", path)
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                fd = os.open(fail["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return real(path)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path)

    module.read_bytes = read_bytes


PATCHES = {"persam.jobs.outputs": _patch_outputs, "persam.session.store": _patch_store}


class _Hooks(importlib.abc.MetaPathFinder):
    """Finds the patched modules with the other finders and patches them once they are executed."""

    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


if CONFIG:
    sys.meta_path.insert(0, _Hooks())
