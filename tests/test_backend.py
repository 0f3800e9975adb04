"""Backend switching: backend(), use_backend() as a call and as a context manager, the
FASTBP_BACKEND variable, the fallback to NumPy (with one RuntimeWarning naming the import error)
when no compiled module can be imported -- blocked by an import hook --, and the per-op fallback
where one compiled module is corrupt.  (Threads, asyncio and missing ops: test_backend_context.py.)

Start-up behaviour is tested in child interpreters, each importing fastbp afresh.
"""
import shutil

import numpy as np
import pytest

import fastbp
from conftest import FORCED, PACKAGE_DIR, last_json_line, require_compiled, run_python
from fastbp import kernels
from fastbp import _backend
from fastbp.kernels import _reference

COMPILED = _backend.compiled_unavailable() is None


# ------------------------------------------------------------------------------------ in process
def test_backend_names_the_implementations_the_kernels_call(backend):
    assert fastbp.backend() == backend
    assert (kernels.ops() is _reference) == (backend == "numpy")
    assert set(kernels.implementations().values()) == {backend}


@pytest.mark.parametrize("target", ["numpy", "compiled"])
def test_use_backend_as_call_switches_for_good(backend, target):
    if target == "compiled":
        require_compiled()
    fastbp.use_backend(target)
    assert fastbp.backend() == target


def test_kernels_run_on_the_active_backend(backend, monkeypatch):
    """A spy on the twin sees the call only when the NumPy backend is active."""
    calls = []
    monkeypatch.setattr(_reference, "linear_forward", lambda *args: calls.append(args) or args[-1])
    kernels.linear_forward(np.ones((2, 3)), np.ones((3, 4)), np.ones(4))
    assert len(calls) == (1 if backend == "numpy" else 0)


@pytest.mark.parametrize("inner", ["numpy", "compiled"])
def test_use_backend_as_context_manager_restores(backend, inner):
    if inner == "compiled":
        require_compiled()
    with fastbp.use_backend(inner) as switch:
        assert fastbp.backend() == inner
        assert isinstance(switch, fastbp.use_backend)
    assert fastbp.backend() == backend


def test_use_backend_restores_after_an_exception(backend):
    with pytest.raises(KeyError), fastbp.use_backend("numpy"):
        raise KeyError("inside")
    assert fastbp.backend() == backend


@pytest.mark.parametrize("name", ["numpy ", "NumPy", "cython", "", None])
def test_unknown_backend_name_raises_and_keeps_the_backend(backend, name):
    with pytest.raises(ValueError, match="unknown backend"):
        fastbp.use_backend(name)
    assert fastbp.backend() == backend


def test_forcing_an_unavailable_compiled_backend_raises_with_the_reason(monkeypatch):
    monkeypatch.setattr(_backend, "_compiled_error", "ImportError: the reason")
    with fastbp.use_backend("numpy"):
        with pytest.raises(ImportError, match="the reason"):
            fastbp.use_backend("compiled")
        assert fastbp.backend() == "numpy"


# ---------------------------------------------------------------------- start-up, in a child
REPORT = r"""
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import fastbp
    imported = sorted(m for m in sys.modules if m.startswith("fastbp"))
    name = fastbp.backend()
    from fastbp import kernels
    from fastbp import _backend
    import numpy as np
    X, W, b = np.arange(6.0).reshape(2, 3), np.ones((3, 2)), np.array([0.5, -0.5])
    Z = kernels.linear_forward(X, W, b)
    value = kernels.loss("softmax_cross_entropy", Z, np.array([0, 1]))[0]
    fastbp.backend()  # asking again warns no more
print(json.dumps({
    "backend": name, "file": fastbp.__file__, "lazy": imported, "error": _backend.compiled_unavailable(),
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    # Z = [[3.5, 2.5], [12.5, 11.5]]: row 0 has label 0 one logit ahead, row 1 label 1 one behind
    "works": bool(np.array_equal(Z, X @ W + b)
                  and np.isclose(value, (np.log1p(np.exp(-1)) + np.log1p(np.exp(1))) / 2)),
}))
"""


def start(env=None, pythonpath=None, cwd=None, prelude=""):
    """Import fastbp in a child with ``env``; its report (or the failed child itself)."""
    return run_python(prelude + REPORT, env=env, pythonpath=pythonpath, cwd=cwd)


def runtime_warnings(report):
    return [message for category, message in report["warnings"] if category == "RuntimeWarning"]


def test_import_fastbp_loads_no_kernel_module(tmp_path):
    report = last_json_line(start(env={"FASTBP_BACKEND": "numpy"}, cwd=tmp_path))
    assert report["lazy"] == ["fastbp"], "import fastbp alone must not import the backends"


@pytest.mark.parametrize("value", ["numpy", " NumPy "])
def test_env_numpy(value, tmp_path):
    report = last_json_line(start(env={"FASTBP_BACKEND": value}, cwd=tmp_path))
    assert (report["backend"], report["warnings"], report["works"]) == ("numpy", [], True)


@pytest.mark.parametrize("value", [None, "auto", "", "AUTO"])
def test_env_auto_prefers_compiled(value, tmp_path):
    report = last_json_line(start(env={} if value is None else {"FASTBP_BACKEND": value}, cwd=tmp_path))
    assert report["works"]
    if COMPILED:
        assert (report["backend"], report["warnings"]) == ("compiled", [])
    else:
        assert report["backend"] == "numpy"
        assert runtime_warnings(report) == [
            f"fastbp: compiled kernels unavailable ({_backend.compiled_unavailable()}); running on NumPy"]


def test_env_compiled(tmp_path):
    proc = start(env={"FASTBP_BACKEND": "compiled"}, cwd=tmp_path)
    if COMPILED:
        report = last_json_line(proc)
        assert (report["backend"], report["warnings"], report["works"]) == ("compiled", [], True)
    else:
        assert proc.returncode != 0 and "ImportError" in proc.stderr
        assert _backend.compiled_unavailable() in proc.stderr


def test_env_bogus_value_raises(tmp_path):
    proc = start(env={"FASTBP_BACKEND": "fortran"}, cwd=tmp_path)
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "'fortran'" in proc.stderr


# --------------------------------------------------------------------------------- fallbacks
BLOCKER = r"""
import sys


class Block:
    '''Make fastbp's compiled modules unimportable, as on a machine they were not built for.'''

    def find_spec(self, name, path=None, target=None):
        if name.startswith({prefix!r}):
            raise ImportError(f"blocked {{name}} for the test")
        return None


sys.meta_path.insert(0, Block())
"""
BLOCKED = {"compiled": ("fastbp.kernels._compiled", "fastbp.kernels._compiled"),  # prefix to block, module named
           "one_c_module": ("fastbp.kernels._c_", "fastbp.kernels._c_")}


@pytest.fixture(params=BLOCKED)
def blocked(request):
    prefix, named = BLOCKED[request.param]
    if prefix == "fastbp.kernels._c_" and not COMPILED:
        if FORCED == "compiled":
            pytest.fail("FASTBP_BACKEND=compiled but the compiled backend does not import")
        pytest.skip("the compiled backend does not import, so blocking its _c_ modules changes nothing")
    return BLOCKER.format(prefix=prefix), f"ImportError: blocked {named}"


@pytest.mark.parametrize("value", [None, "auto"])
def test_blocked_compiled_falls_back_to_numpy_with_one_warning(blocked, value, tmp_path):
    prelude, reason = blocked
    report = last_json_line(start(env={} if value is None else {"FASTBP_BACKEND": value},
                                  cwd=tmp_path, prelude=prelude))
    assert (report["backend"], report["works"]) == ("numpy", True)
    assert report["error"].startswith(reason)
    warned = runtime_warnings(report)
    assert len(warned) == 1 and reason in warned[0], report["warnings"]


def test_blocked_compiled_with_env_numpy_is_silent(blocked, tmp_path):
    report = last_json_line(start(env={"FASTBP_BACKEND": "numpy"}, cwd=tmp_path, prelude=blocked[0]))
    assert (report["backend"], report["warnings"], report["works"]) == ("numpy", [], True)


def test_blocked_compiled_with_env_compiled_raises_the_reason(blocked, tmp_path):
    prelude, reason = blocked
    proc = start(env={"FASTBP_BACKEND": "compiled"}, cwd=tmp_path, prelude=prelude)
    assert proc.returncode != 0
    assert "ImportError: fastbp's compiled kernels cannot be imported" in proc.stderr
    assert reason in proc.stderr


@pytest.fixture
def corrupt_copy(tmp_path):
    """A copy of the fastbp package with its first compiled module cut to 100 bytes; (the folder to
    put on PYTHONPATH, the truncated file's name)."""
    kernels = PACKAGE_DIR / "kernels"  # a kernel module: without it the compiled backend cannot run
    libraries = sorted(kernels.glob("_c_*.so")) + sorted(kernels.glob("_c_*.pyd"))
    if not libraries:
        if FORCED == "compiled":
            pytest.fail(f"FASTBP_BACKEND=compiled but {PACKAGE_DIR} holds no compiled module")
        pytest.skip(f"no compiled module in {PACKAGE_DIR}")
    copy = tmp_path / "site" / "fastbp"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    victim = copy / libraries[0].relative_to(PACKAGE_DIR)
    victim.write_bytes(victim.read_bytes()[:100])
    return copy.parent, victim.name


def test_corrupt_so_falls_back_to_numpy_with_one_warning(corrupt_copy, tmp_path):
    site, victim = corrupt_copy
    report = last_json_line(start(pythonpath=site, cwd=tmp_path))
    assert report["file"].startswith(str(site)), "the child imported another fastbp"
    assert (report["backend"], report["works"]) == ("numpy", True)
    warned = runtime_warnings(report)
    assert len(warned) == 1 and victim in warned[0], report["warnings"]


def test_corrupt_so_with_env_compiled_raises_naming_the_file(corrupt_copy, tmp_path):
    site, victim = corrupt_copy
    proc = start(env={"FASTBP_BACKEND": "compiled"}, pythonpath=site, cwd=tmp_path)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and victim in proc.stderr
