"""Export for serving (issue 15, item 5): ``to_onnx`` run by ONNX Runtime equals the estimators'
own methods, float32 and float64; ``to_sklearn`` gives scikit-learn MLPs that predict the same.

The truths: each activation's ONNX form against the kernels' NumPy twins (fastbp.kernels._reference)
over a wide range of z, tails included; each exported method against the estimator's public method
(and the GAN's samples against ``sample`` with the same noise, drawn as its docstring says).
"""
import sys
import warnings

import numpy as np
import pytest

import fastbp
from fastbp.kernels import _reference, registry
from fastbp.models import export

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-14)}


@pytest.fixture(scope="module")
def digits():
    X, y = fastbp.load_digits()
    return X[:240], y[:240]


def _fit(model, *data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return model.fit(*data)


def _run(model_proto, **inputs):
    onnx.checker.check_model(model_proto, full_check=True)
    session = ort.InferenceSession(model_proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def test_every_activation_has_an_onnx_form():
    assert set(export._ONNX_ACTIVATIONS) == set(registry.ACTIVATIONS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(registry.ACTIVATIONS))
def test_activation_matches_the_numpy_twin(name, dtype):
    """One layer W = I, b = 0: the graph is the activation alone, checked from the far tails to 0."""
    dtype = np.dtype(dtype)
    z = np.concatenate([-np.geomspace(1e-12, 60, 199), [0.0, 0.0], np.geomspace(1e-12, 60, 199)])
    Z = z.astype(dtype).reshape(-1, 8)
    alpha = None if registry.ACTIVATIONS[name].alpha is None else 0.3
    step = export.LayerStep(np.eye(8, dtype=dtype), np.zeros(8, dtype), name, alpha)
    out = _run(export.onnx_graph(export.Path((step,), "A"), name), X=Z)["A"]
    expected = _reference.activation(name, Z, np.empty_like(Z), alpha)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, **TOL[dtype.name])


def test_float64_erf_fit_is_double_precision():
    from numpy.polynomial import chebyshev
    from scipy import special
    x = np.linspace(0, export.ERF_RANGE, 20001)
    fit = chebyshev.chebval(2 * x / export.ERF_RANGE - 1, export.erf_chebyshev())
    assert np.max(np.abs(fit - special.erf(x))) < 1e-14
    assert special.erfc(export.ERF_RANGE) < 1e-16  # beyond the range erf is +-1 in float64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["multiclass", "binary strings", "multilabel"])
def test_classifier_label_and_probabilities(digits, kind, dtype):
    X, y = digits
    if kind == "binary strings":
        y = np.array(["even", "odd"])[y % 2]
    elif kind == "multilabel":
        y = np.stack([y % 2, y % 3 == 0, y > 6], axis=1).astype(int)
    clf = _fit(fastbp.MLPClassifier((12, 7), activation="gelu", max_iter=4, dtype=dtype,
                                    random_state=0), X, y)
    out = _run(clf.to_onnx(), X=X.astype(dtype))
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), **TOL[dtype])
    np.testing.assert_array_equal(out["label"], clf.predict(X).astype(out["label"].dtype))
    assert out["label"].shape == clf.predict(X).shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_regressor(digits, n_outputs, dtype):
    X, y = digits
    Y = y.astype(float) if n_outputs == 1 else np.stack([y, y ** 2, -y], axis=1) / 10
    reg = _fit(fastbp.MLPRegressor((10,), activation="elu", max_iter=4, dtype=dtype,
                                   random_state=0), X, Y)
    out = _run(reg.to_onnx("predict"), X=X.astype(dtype))["predict"]
    assert out.shape == reg.predict(X).shape
    np.testing.assert_allclose(out, reg.predict(X), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda dtype: fastbp.Autoencoder(3, (10,), activation="softplus", loss="cross_entropy",
                                     max_iter=3, dtype=dtype, random_state=0),
    lambda dtype: fastbp.Autoencoder(4, (9,), activation="tanh", sparsity="kl",
                                     max_iter=3, dtype=dtype, random_state=0),
    lambda dtype: fastbp.VAE(3, (10,), activation="silu", loss="cross_entropy", max_iter=3,
                             dtype=dtype, random_state=0),
    lambda dtype: fastbp.VAE(2, (8,), decoder_layer_sizes=(6, 5), activation="leaky_relu",
                             max_iter=3, dtype=dtype, random_state=0),
], ids=["ae-cross-entropy", "ae-sparse-kl", "vae-cross-entropy", "vae-squared"])
def test_encoder_decoder_methods(digits, make, dtype):
    X = digits[0]
    model = _fit(make(dtype), X)
    model.set_params(n_components=model.n_components + 1)  # the fitted network is what is exported
    data = X.astype(dtype)
    codes = model.transform(X)
    np.testing.assert_allclose(_run(model.to_onnx(), X=data)["transform"], codes, **TOL[dtype])
    np.testing.assert_allclose(_run(model.to_onnx("reconstruct"), X=data)["reconstruct"],
                               model.reconstruct(X), **TOL[dtype])
    decoded = _run(model.to_onnx("inverse_transform"), H=codes.astype(dtype))
    np.testing.assert_allclose(decoded["inverse_transform"], model.inverse_transform(codes),
                               **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gan_sample_and_discriminator(digits, dtype):
    X = digits[0]
    gan = _fit(fastbp.GAN(n_components=5, generator_layer_sizes=(12,), discriminator_layer_sizes=(8,),
                          output_activation="sigmoid", max_iter=2, batch_size=64, dtype=dtype,
                          random_state=0), X)
    # sample(n, random_state=s) decodes z = default_rng(s).standard_normal((n, n_components))
    z = np.random.default_rng(7).standard_normal((20, 5)).astype(dtype)
    out = _run(gan.to_onnx(), z=z)["sample"]
    np.testing.assert_allclose(out, gan.sample(20, random_state=7), **TOL[dtype])
    scores = _run(gan.to_onnx("decision_function"), X=X.astype(dtype))["decision_function"]
    np.testing.assert_allclose(scores, gan.decision_function(X), **TOL[dtype])
    # the minibatch-std feature's inference constant is folded into D's output bias
    gan.set_params(minibatch_std=False).fit(X)
    scores = _run(gan.to_onnx("decision_function"), X=X.astype(dtype))["decision_function"]
    np.testing.assert_allclose(scores, gan.decision_function(X), **TOL[dtype])


def test_onnx_errors(digits, monkeypatch):
    X, y = digits
    with pytest.raises(fastbp.NotFittedError):
        fastbp.MLPRegressor().to_onnx()
    clf = _fit(fastbp.MLPClassifier((5,), max_iter=1, random_state=0), X, y)
    with pytest.raises(ValueError, match=r"exports the methods \['predict_proba'\], not 'transform'"):
        clf.to_onnx("transform")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"fastbp\[onnx\]"):
        clf.to_onnx()


# ---------------------------------------------------------------------------------- to_sklearn
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["multiclass", "binary strings", "multilabel", "regression"])
def test_to_sklearn_predicts_the_same(digits, kind, dtype):
    from sklearn import neural_network
    from sklearn.utils.validation import check_is_fitted
    X, y = digits
    if kind == "binary strings":
        y = np.array(["even", "odd"])[y % 2]
    elif kind == "multilabel":
        y = np.stack([y % 2, y % 3 == 0], axis=1).astype(int)
    elif kind == "regression":
        y = np.stack([y, -y], axis=1) / 10
    cls = fastbp.MLPRegressor if kind == "regression" else fastbp.MLPClassifier
    model = _fit(cls((9, 6), activation="logistic", alpha=0.01, max_iter=4, dtype=dtype,
                     random_state=0), X, y)
    sk = model.to_sklearn()
    assert type(sk) is getattr(neural_network, cls.__name__)
    check_is_fitted(sk)
    assert sk.get_params()["activation"] == "logistic" and sk.alpha == 0.01
    assert sk.coefs_[0] is not model.coefs_[0]  # a copy: training one leaves the other alone
    if kind == "regression":
        np.testing.assert_allclose(sk.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(sk.predict_proba(X), model.predict_proba(X), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_array_equal(sk.predict(X), model.predict(X))
        np.testing.assert_array_equal(sk.classes_, model.classes_)
    assert sk.score(X, y) == pytest.approx(model.score(X, y))


@pytest.mark.parametrize("activation", ["leaky_relu", "gelu", "softplus"])
def test_to_sklearn_refuses_what_sklearn_cannot_represent(digits, activation):
    X, y = digits
    model = _fit(fastbp.MLPClassifier((5,), activation=activation, max_iter=1, random_state=0), X, y)
    with pytest.raises(ValueError, match=f"no '{activation}' activation"):
        model.to_sklearn()
    with pytest.raises(fastbp.NotFittedError):
        fastbp.MLPRegressor().to_sklearn()
    assert not hasattr(fastbp.Autoencoder(), "to_sklearn")
