"""fastbp._platform._blas_threads: the cheap BLAS thread cap agrees with threadpoolctl's own reading."""
import pytest

from fastbp._platform import _blas_threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_counts():
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


def test_every_blas_is_found():
    assert len(_blas_threads.all_blas()) == len(blas_counts()) >= 1
    assert 1 <= len(_blas_threads.scipy_blas()) <= len(_blas_threads.all_blas())


def test_cap_holds_inside_the_block_and_is_undone():
    before = blas_counts()
    with _blas_threads.limit_blas_threads(1):
        assert blas_counts() == [1] * len(before)
    assert blas_counts() == before


def test_cap_never_raises_a_lower_limit():
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        with _blas_threads.limit_blas_threads(4) as cap:
            assert blas_counts() == [1] * len(blas_counts())
            assert cap.limit == 1
        assert blas_counts() == [1] * len(blas_counts())


def test_cap_is_undone_after_an_exception():
    before = blas_counts()
    with pytest.raises(KeyError):
        with _blas_threads.limit_blas_threads(1):
            raise KeyError("x")
    assert blas_counts() == before


@pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")
def test_estimator_n_threads_caps_blas_during_predict(monkeypatch):
    import numpy as np

    import fastbp
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    model = fastbp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, n_threads=1).fit(X, y)
    seen = []
    network = model.network_
    real = network.predict
    monkeypatch.setattr(network, "predict",
                        lambda *args: (seen.append(blas_counts()), real(*args))[1])
    before = blas_counts()
    model.predict(X)
    assert seen == [[1] * len(before)]
    assert blas_counts() == before


def test_without_numpy_openblas_the_choice_falls_back_to_scipy(monkeypatch):
    """A NumPy built on another BLAS (MKL, Accelerate): 'auto' takes SciPy's, 'numpy' refuses."""
    libraries = _blas_threads._find()
    monkeypatch.setattr(_blas_threads, "_libraries", (libraries[0], libraries[1], None))
    monkeypatch.setattr(_blas_threads, "_numpy_openblas", None)
    assert _blas_threads.numpy_openblas() is None
    monkeypatch.setenv("FASTBP_BLAS", "auto")
    assert _blas_threads.blas_choice() == "scipy"
    monkeypatch.setenv("FASTBP_BLAS", "numpy")
    with pytest.raises(RuntimeError, match="no OpenBLAS"):
        _blas_threads.blas_choice()
    monkeypatch.setenv("FASTBP_BLAS", "bogus")
    with pytest.raises(ValueError, match="FASTBP_BLAS"):
        _blas_threads.blas_choice()


def test_numpy_openblas_found_here_is_numpy_s_own():
    """On NumPy's wheels (this machine's), its OpenBLAS is found under NumPy's folders."""
    import numpy as np
    found = _blas_threads.numpy_openblas()
    if found is None:
        pytest.skip("this NumPy has no OpenBLAS of its own")
    numpy_libs = [lib for lib in threadpoolctl.threadpool_info()
                  if lib["user_api"] == "blas" and _blas_threads._inside(lib["filepath"], np)]
    assert len(numpy_libs) == 1 and numpy_libs[0]["internal_api"] == "openblas"
    assert found.ilp64 and found.sgemm and found.dgemm
