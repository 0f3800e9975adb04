"""The backend choice per thread and asyncio task (a ContextVar: fastbp._backend), and the compiled
backend's per-op fallback to the NumPy twin (fastbp.kernels.implementations).

Which implementation ran is seen by spies put in the place of the compiled op and of its twin, each
recording the thread that called it; results are checked against X @ W + b.
"""
import asyncio
import contextvars
import threading

import numpy as np
import pytest

import fastbp
from conftest import last_json_line, run_python
from fastbp import _backend, kernels
from fastbp.kernels import _reference

X, W, b = np.arange(6.0).reshape(2, 3), np.ones((3, 2)), np.array([0.5, -0.5])


@pytest.fixture
def spies(compiled, monkeypatch):
    """{backend name: the threads that ran linear_forward on it}, through either table."""
    ran = {"numpy": [], "compiled": []}
    for name, table in (("numpy", _reference), ("compiled", kernels._COMPILED)):
        def spy(*args, _real=getattr(table, "linear_forward"), _ran=ran[name]):
            _ran.append(threading.get_ident())
            return _real(*args)
        monkeypatch.setattr(table, "linear_forward", spy)
    return ran


def in_thread(work):
    """Run ``work()`` in a new thread; its result (or its exception, raised here)."""
    box = {}

    def target():
        try:
            box["value"] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            box["error"] = error
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------------------------- threads
def test_two_threads_run_their_own_backends_at_once(spies):
    barrier = threading.Barrier(2, timeout=30)
    seen, idents = {}, {}

    def worker(name):
        idents[name] = threading.get_ident()
        with fastbp.use_backend(name):
            barrier.wait()  # both blocks are open now
            for _ in range(20):
                assert np.array_equal(kernels.linear_forward(X, W, b), X @ W + b)
                barrier.wait()  # and stay open while the other thread computes
            seen[name] = (fastbp.backend(), kernels.implementations()["linear_forward"])

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("numpy", "compiled")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen == {"numpy": ("numpy", "numpy"), "compiled": ("compiled", "compiled")}
    assert set(spies["numpy"]) == {idents["numpy"]} and len(spies["numpy"]) == 20
    assert set(spies["compiled"]) == {idents["compiled"]} and len(spies["compiled"]) == 20


@pytest.mark.parametrize("block", ["numpy", "compiled"])
def test_a_block_switches_its_own_thread_only(spies, block):
    other = "compiled" if block == "numpy" else "numpy"
    fastbp.use_backend(other)
    with fastbp.use_backend(block):
        assert fastbp.backend() == block
        assert in_thread(fastbp.backend) == other  # a new thread runs the process default
        in_thread(lambda: kernels.linear_forward(X, W, b))
        kernels.linear_forward(X, W, b)
    assert fastbp.backend() == other
    assert len(spies[other]) == 1 and len(spies[block]) == 1
    assert spies[block] == [threading.get_ident()] != spies[other]


def test_a_plain_call_switches_for_good_here_and_in_new_threads(compiled):
    for name in ("numpy", "compiled", "numpy"):
        fastbp.use_backend(name)
        assert fastbp.backend() == name
        assert in_thread(fastbp.backend) == name
        assert in_thread(lambda: set(kernels.implementations().values())) == {name}


def test_a_plain_call_inside_a_block_sets_the_default_and_the_block_restores_its_context(compiled):
    fastbp.use_backend("compiled")
    with fastbp.use_backend("numpy"):
        fastbp.use_backend("compiled")
        assert fastbp.backend() == "compiled" == in_thread(fastbp.backend)
        fastbp.use_backend("numpy")
    assert fastbp.backend() == "compiled"  # as before the block
    assert in_thread(fastbp.backend) == "numpy"  # the last plain call's default


def test_blocks_opened_at_once_leave_the_process_default_as_they_found_it(compiled):
    """Two threads' blocks interleaved as a thread switch can (both calls, then both entries)."""
    fastbp.use_backend("numpy")
    first, second = contextvars.copy_context(), contextvars.copy_context()
    a = first.run(fastbp.use_backend, "compiled")
    b = second.run(fastbp.use_backend, "numpy")
    first.run(a.__enter__)
    second.run(b.__enter__)
    assert (first.run(fastbp.backend), second.run(fastbp.backend)) == ("compiled", "numpy")
    assert fastbp.backend() == "numpy" == in_thread(fastbp.backend)
    first.run(a.__exit__, None, None, None)
    second.run(b.__exit__, None, None, None)
    assert fastbp.backend() == "numpy" == in_thread(fastbp.backend)
    fastbp.use_backend("compiled")  # and plain calls still settle it
    assert in_thread(fastbp.backend) == "compiled"


def test_a_refused_switch_changes_nothing_anywhere(monkeypatch):
    fastbp.use_backend("numpy")
    monkeypatch.setattr(_backend, "_compiled_error", "ImportError: the reason")
    with pytest.raises(ImportError, match="the reason"):
        fastbp.use_backend("compiled")
    with pytest.raises(ValueError, match="unknown backend"):
        fastbp.use_backend("fortran")
    assert fastbp.backend() == "numpy" == in_thread(fastbp.backend)


# ---------------------------------------------------------------------------------- asyncio
def test_asyncio_tasks_each_keep_their_own_backend(spies):
    async def task(name, started, log):
        with fastbp.use_backend(name):
            started.set()
            for _ in range(5):
                await asyncio.sleep(0)  # the other task runs, in its own block, between these
                log.append((name, fastbp.backend()))
                kernels.linear_forward(X, W, b)
        return fastbp.backend()

    async def main():
        fastbp.use_backend("compiled")
        log, started = [], [asyncio.Event(), asyncio.Event()]
        both = asyncio.gather(task("numpy", started[0], log), task("compiled", started[1], log))
        after = await both
        return log, after, fastbp.backend()

    log, after, outside = asyncio.run(main())
    assert {name for name, _ in log} == {"numpy", "compiled"} and len(log) == 10
    assert all(name == seen for name, seen in log), log
    assert after == ["compiled", "compiled"] and outside == "compiled"  # each block restored
    assert len(spies["numpy"]) == 5 and len(spies["compiled"]) == 5


def test_an_asyncio_task_inherits_the_choice_of_its_creator(compiled):
    async def report():
        return fastbp.backend()

    async def main():
        with fastbp.use_backend("numpy"):
            inside = await asyncio.create_task(report())
        return inside, await asyncio.create_task(report())

    fastbp.use_backend("compiled")
    assert asyncio.run(main()) == ("numpy", "compiled")


# ------------------------------------------------------------------------ per-op fallback
MISSING_OP = r"""
import importlib.machinery, sys


class Strip:
    '''Load fastbp.kernels._c_step without step_update, as a build from before that kernel.'''

    def find_spec(self, name, path=None, target=None):
        if name != "fastbp.kernels._c_step":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)

        class Loader(type(spec.loader)):
            def exec_module(self, module):
                super().exec_module(module)
                del module.step_update
        spec.loader = Loader(spec.loader.name, spec.loader.path)
        return spec


sys.meta_path.insert(0, Strip())
"""
MISSING_MODULE = r"""
import sys


class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "fastbp.kernels._c_step":
            raise ImportError("blocked _c_step for the test")
        return None


sys.meta_path.insert(0, Block())
"""
FALLBACK_REPORT = r"""
import json, warnings
import numpy as np
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import fastbp
    from fastbp import kernels
    from fastbp.kernels import _reference
    exact = True
    for dtype in (np.float32, np.float64):
        for step in (1, 2, 3):
            rng = np.random.default_rng(step)
            p, g = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((3, 4)).astype(dtype)
            m, v = np.zeros_like(p), np.zeros_like(p)
            state = [p.copy(), g, m.copy(), v.copy()]
            kernels.adam_update(p, g, m, v, step=step, lr=0.1)
            _reference.adam_update(*state, 0.1, 0.9, 0.999, 1e-8, 0.0, step)
            exact &= all(np.array_equal(a, b) for a, b in zip((p, m, v), state[:1] + state[2:]))
            exact &= p.dtype == dtype
            value, grad = kernels.loss("squared_error", p, np.zeros_like(p))
            exact &= np.allclose(grad, p / 3) and grad.dtype == dtype
            Z = kernels.linear_forward(p, np.ones((4, 2), dtype), None)
            exact &= np.allclose(Z, p.sum(axis=1, keepdims=True) * np.ones(2))
print(json.dumps({"backend": fastbp.backend(), "implementations": kernels.implementations(),
                  "exact": bool(exact),
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
"""


@pytest.mark.parametrize("env", ["auto", "compiled"])
@pytest.mark.parametrize("prelude, missing, reason", [
    (MISSING_OP, ["step_update"], "not in _c_activation, _c_linear, _c_step"),
    (MISSING_MODULE, ["loss", "step_update"],
     "not in _c_activation, _c_linear; ImportError: blocked _c_step for the test"),
], ids=["op_not_compiled", "module_not_imported"])
def test_a_missing_compiled_op_runs_on_its_twin_said_once(compiled, prelude, missing, reason, env):
    report = last_json_line(run_python(prelude + FALLBACK_REPORT, env={"FASTBP_BACKEND": env}))
    assert (report["backend"], report["exact"]) == ("compiled", True)
    assert report["implementations"] == {
        kernel: f"numpy ({reason})" if kernel in missing else "compiled" for kernel in kernels.KERNELS}
    called = [kernel for kernel in ("step_update", "loss") if kernel in missing]  # linear_forward compiled
    assert report["warnings"] == [
        ["RuntimeWarning", f"fastbp: compiled kernel {kernel} is missing ({reason}); it runs on its "
                           "NumPy twin"] for kernel in called]


def test_missing_compiled_ops_say_nothing_on_numpy(compiled):
    report = last_json_line(run_python(MISSING_MODULE + FALLBACK_REPORT,
                                       env={"FASTBP_BACKEND": "numpy"}))
    assert (report["backend"], report["exact"], report["warnings"]) == ("numpy", True, [])
    assert set(report["implementations"].values()) == {"numpy"}


def test_implementations_name_every_kernel_once(backend):
    table = kernels.implementations()
    assert list(table) == list(kernels.KERNELS)
    assert set(kernels.KERNELS) <= set(kernels.__all__)
    assert all(callable(getattr(kernels, kernel)) and callable(getattr(kernels.ops(), kernel))
               for kernel in kernels.KERNELS)
    assert kernels.implementations("numpy") == dict.fromkeys(kernels.KERNELS, "numpy")
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.implementations("cython")
