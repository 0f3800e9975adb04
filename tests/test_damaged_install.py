"""Damaged installs (issue 11, section 6): a compiled module cut short, as by a full disk or an
interrupted copy, is refused before it is loaded (its ELF headers against its size: fastbp._platform._elf),
so its kernels fall back to NumPy, said by RuntimeWarning, instead of dying of SIGBUS; a damaged
or missing training engine (_c_train) is said once, by a RuntimeWarning naming the engine.

Each case runs on a copy of the package, in a child interpreter with FASTBP_BACKEND=auto.
"""
import shutil

import pytest

from conftest import FORCED, PACKAGE_DIR, last_json_line, run_python
from fastbp._platform import _elf
from test_backend import runtime_warnings, start

FRACTIONS = (0.1, 0.5, 0.95)


def compiled_files():
    files = sorted(PACKAGE_DIR.rglob("_c_*.so"))
    if not files:
        if FORCED == "compiled":
            pytest.fail(f"FASTBP_BACKEND=compiled but {PACKAGE_DIR} holds no compiled module")
        pytest.skip(f"no compiled module in {PACKAGE_DIR}")
    return files


def damaged_copy(tmp_path, module, fraction=None):
    """A copy of the package with ``module``'s file cut to ``fraction`` of its size (None:
    removed); (the folder to put on PYTHONPATH, the file's name)."""
    files = [f for f in compiled_files() if f.name.startswith(module + ".")]
    if not files:
        pytest.skip(f"{module} is not built")
    copy = tmp_path / "site" / "fastbp"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    victim = copy / files[0].relative_to(PACKAGE_DIR)
    if fraction is None:
        victim.unlink()
    else:
        victim.write_bytes(files[0].read_bytes()[:int(files[0].stat().st_size * fraction)])
    return copy.parent, victim.name


# _c_linear and _c_step import _c_activation: without it no compiled kernel imports (backend numpy,
# one warning); without one of the others, its kernels run on their twins (one warning per kernel
# at its first call: the child calls one kernel of each, linear_forward and loss).
@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("module, backend", [("_c_linear", "compiled"), ("_c_activation", "numpy"),
                                             ("_c_step", "compiled")])
def test_a_truncated_kernel_module_falls_back_to_numpy_with_one_warning(module, backend, fraction,
                                                                         tmp_path):
    site, victim = damaged_copy(tmp_path, module, fraction)
    proc = start(pythonpath=site, cwd=tmp_path)
    assert proc.returncode == 0, f"the child died (SIGBUS is -7): {proc.returncode}\n{proc.stderr}"
    report = last_json_line(proc)
    assert report["file"].startswith(str(site)), "the child imported another fastbp"
    assert (report["backend"], report["works"]) == (backend, True)
    warned = runtime_warnings(report)
    assert len(warned) == 1 and victim in warned[0] and "damaged" in warned[0], warned


ENGINE = r"""
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import numpy as np
    import fastbp
    X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]] * 8)
    y = np.array([0, 1, 1, 0] * 8)
    est = fastbp.MLPClassifier((8,), max_iter=30, random_state=0).fit(X, y)
    est.fit(X, y)  # said once
    proba = est.predict_proba(X)
print(json.dumps({"backend": fastbp.backend(), "finite": bool(np.isfinite(proba).all()),
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
"""


@pytest.mark.parametrize("fraction", [None, 0.5, 0.95], ids=["missing", "0.5", "0.95"])
def test_a_damaged_or_missing_engine_is_said_once_and_fits_layer_by_layer(fraction, tmp_path):
    site, victim = damaged_copy(tmp_path, "_c_train", fraction)
    report = last_json_line(run_python(ENGINE, pythonpath=site, cwd=tmp_path))
    assert (report["backend"], report["finite"]) == ("compiled", True)
    warned = runtime_warnings(report)
    assert len(warned) == 1 and "training engine" in warned[0], warned
    assert ("_c_train" if fraction is None else victim) in warned[0]


@pytest.mark.parametrize("fraction", [0.0, 0.01, *FRACTIONS, 1.0])
def test_damage_reads_truncation_from_the_headers(fraction, tmp_path):
    """The check itself, on every compiled file: whole files pass, cut ones are named truncated
    (or, cut before the ELF magic, left to the loader, which refuses them cleanly)."""
    for path in compiled_files():
        data = path.read_bytes()
        cut = tmp_path / path.name
        cut.write_bytes(data[:int(len(data) * fraction)])
        damage = _elf.damage(str(cut))
        if fraction == 1.0 or len(cut.read_bytes()) < 4:
            assert damage is None, damage
        else:
            assert damage is not None and "truncated" in damage


def test_damage_reads_the_loadable_segments_without_section_headers(tmp_path):
    """A file without section headers (as after sstrip) cut short: its loadable segments, which
    the loader maps, say it."""
    path = compiled_files()[0]
    data = bytearray(path.read_bytes())
    if data[4] != 2 or data[5] != 1:
        pytest.skip("not a little-endian ELF64 file")
    data[0x28:0x30] = bytes(8)  # e_shoff = 0: no section header table
    whole, cut = tmp_path / "whole.so", tmp_path / "cut.so"
    whole.write_bytes(bytes(data))
    cut.write_bytes(bytes(data[:len(data) * 9 // 10]))
    assert _elf.damage(str(whole)) is None
    assert "loadable segment" in _elf.damage(str(cut))
