"""The estimators' serving path: an X already in the model's layout skips scikit-learn's checks
(fastbp.models._validation.check_data / check_X) with the same outcome as the full checks, and
the probabilities come out of the network's own pass (fastbp.nn.Sequential.predict's
``output``) in the model's dtype."""
import warnings

import numpy as np
import pytest
from scipy import special

import fastbp
from fastbp.kernels import _reference
from fastbp.models import _validation
from fastbp.nn import make_mlp


def quiet(model, *data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return model.fit(*data)


@pytest.fixture(scope="module")
def fitted():
    X, y = fastbp.load_digits()
    return quiet(fastbp.MLPClassifier((16,), max_iter=3, random_state=0), X, y), X


@pytest.fixture(scope="module", params=["float32", "float64"])
def classifiers(request):
    """{kind: model} fitted on the digits (multiclass, binary, multilabel) in one dtype."""
    X, y = fastbp.load_digits()
    X, y = X[:400], y[:400]
    settings = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, dtype=request.param)
    return {"multiclass": quiet(fastbp.MLPClassifier(**settings), X, y),
            "binary": quiet(fastbp.MLPClassifier(**settings), X, y % 2),
            "multilabel": quiet(fastbp.MLPClassifier(**settings), X,
                                np.stack([y % 2, y > 4, y == 3], axis=1).astype(int))}, X


def by_hand_logits(model, X):
    """The logits in float64 from coefs_ and intercepts_ (relu hidden layers): the truth."""
    a = np.asarray(X, np.float64)
    for W, b in zip(model.coefs_[:-1], model.intercepts_[:-1]):
        a = np.maximum(a @ W.astype(np.float64) + b, 0.0)
    return a @ model.coefs_[-1].astype(np.float64) + model.intercepts_[-1]


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("rows", [1, 7])
def test_probabilities_equal_the_float64_ones_in_the_models_dtype(classifiers, backend, kind,
                                                                   rows):
    models, X = classifiers
    model = models[kind]
    dtype = model.coefs_[0].dtype
    x = np.ascontiguousarray(X[:rows], dtype)
    t = by_hand_logits(model, x)
    want = {"multiclass": lambda: special.softmax(t, axis=1),
            "binary": lambda: special.expit(np.hstack([-t, t])),
            "multilabel": lambda: special.expit(t)}[kind]()
    proba = model.predict_proba(x)
    assert proba.dtype == dtype and proba.shape == want.shape and proba.flags.c_contiguous
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(proba, want, **tol)
    if kind != "multilabel":
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=4 * np.finfo(dtype).eps)
    log_proba = model.predict_log_proba(x)
    assert log_proba.dtype == dtype
    np.testing.assert_allclose(np.exp(log_proba), want, **tol)
    labels = model.predict(x)
    if kind == "multilabel":
        np.testing.assert_array_equal(labels, (t > 0).astype(int))
    else:
        np.testing.assert_array_equal(labels, model.classes_[want.argmax(axis=1)])


def test_a_binary_probability_keeps_its_precision_near_0_and_1(backend):
    """[sigmoid(-t), sigmoid(t)], not [1 - p, p]: a p within float32's eps of 1 still gives
    1 - p to full relative precision."""
    X = np.array([[-3.0], [3.0]] * 10, np.float32)
    model = quiet(fastbp.MLPClassifier((), max_iter=200, learning_rate_init=0.1,
                                       random_state=0), X, np.arange(20) % 2)
    x = np.array([[40.0]], np.float32)
    t = by_hand_logits(model, x)
    assert abs(t[0, 0]) > 20  # 1 - p below float32's eps
    np.testing.assert_allclose(model.predict_proba(x), special.expit(np.hstack([-t, t])),
                               rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 5, 300])
def test_fast_and_full_checks_predict_alike(fitted, backend, rows):
    model, X = fitted
    fast = np.ascontiguousarray(X[:rows], np.float32)  # the model's layout: the fast path
    full = X[:rows].tolist()                            # a list: scikit-learn's checks
    np.testing.assert_array_equal(model.predict_proba(fast), model.predict_proba(full))
    np.testing.assert_array_equal(model.predict(fast), model.predict(full))


@pytest.mark.parametrize("rows", [1, 6])
def test_every_form_of_X_gives_the_fast_paths_outcome(fitted, backend, rows):
    """Other layouts (float64, Fortran order, a strided view, a list, an unnamed DataFrame) go
    through scikit-learn's checks and give exactly what the fast path gives."""
    pd = pytest.importorskip("pandas")
    model, X = fitted
    fast = np.ascontiguousarray(X[:rows], np.float32)
    wide = np.zeros((rows, 128), np.float32)
    wide[:, ::2] = fast
    forms = {"float64": X[:rows].astype(np.float64), "fortran": np.asfortranarray(fast),
             "strided": wide[:, ::2], "list": fast.tolist(), "frame": pd.DataFrame(fast)}
    want = model.predict_proba(fast)
    for name, form in forms.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no feature-name warning for unnamed columns
            np.testing.assert_array_equal(model.predict_proba(form), want, err_msg=name)


def test_a_float64_model_serves_float64(backend):
    X, y = fastbp.load_digits()
    model = quiet(fastbp.MLPClassifier((8,), max_iter=2, random_state=0, dtype="float64"),
                  X[:200], y[:200])
    fast = np.ascontiguousarray(X[:3], np.float64)
    proba = model.predict_proba(fast)
    assert proba.dtype == np.float64
    np.testing.assert_array_equal(proba, model.predict_proba(X[:3].astype(np.float32)))


@pytest.mark.parametrize("bad, match", [(np.nan, "contains NaN"), (np.inf, "infinity")])
@pytest.mark.parametrize("rows", [3, 1 + _validation.FINITE_BY_ENTRY // 64])  # both checks
def test_fast_path_refuses_what_the_checks_refuse(fitted, backend, bad, match, rows):
    model, X = fitted
    fast = np.ascontiguousarray(np.resize(X, (rows, 64)), np.float32)
    fast[rows // 2, 2] = bad
    for method in (model.predict_proba, model.predict, model.predict_log_proba):
        with pytest.raises(ValueError, match=match):
            method(fast)
        with pytest.raises(ValueError, match=match):  # the full checks say the same
            method(fast.tolist())
    with pytest.raises(ValueError, match="features"):  # another width
        model.predict_proba(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("rows", [2, 1 + _validation.FINITE_BY_ENTRY // 64])
def test_large_finite_values_pass_the_finite_check(fitted, backend, rows):
    """Finite values whose sum overflows float32 are finite: no error, no warning."""
    model, X = fitted
    huge = np.full((rows, 64), np.finfo(np.float32).max, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _validation.check_data(model, huge, np.float32, reset=False) is huge
        assert _validation.check_X(huge, np.float32) is huge


def test_a_model_fitted_on_named_columns_still_checks_them(backend):
    pd = pytest.importorskip("pandas")
    X, y = fastbp.load_digits()
    frame = pd.DataFrame(X[:300], columns=[f"p{i}" for i in range(64)])
    model = quiet(fastbp.MLPClassifier((8,), max_iter=2, random_state=0), frame, y[:300])
    with pytest.warns(UserWarning, match="feature names"):
        model.predict(np.ascontiguousarray(X[:2], np.float32))
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame[frame.columns[::-1]])
    np.testing.assert_allclose(model.predict_proba(frame[:2]),
                               special.softmax(by_hand_logits(model, X[:2]), axis=1),
                               rtol=2e-5, atol=1e-6)


# ----------------------------------------------------------------- the generative estimators
@pytest.fixture(scope="module")
def generative():
    X, _ = fastbp.load_digits()
    X = (X[:200] / 16).astype(np.float32)  # in [0, 1]: cross-entropy reconstructions
    return {"autoencoder": quiet(fastbp.Autoencoder(4, (16,), loss="cross_entropy", max_iter=3,
                                                    random_state=0), X),
            "vae": quiet(fastbp.VAE(4, (16,), loss="cross_entropy", max_iter=3,
                                    random_state=0), X),
            "gan": quiet(fastbp.GAN(4, generator_layer_sizes=(16,),
                                    discriminator_layer_sizes=(16,), max_iter=2,
                                    random_state=0), X)}, X


@pytest.mark.parametrize("name", ["autoencoder", "vae"])
@pytest.mark.parametrize("rows", [1, 5])
def test_transform_and_decoding_fast_and_full_alike(generative, backend, name, rows):
    models, X = generative
    model = models[name]
    fast = np.ascontiguousarray(X[:rows])
    codes = model.transform(fast)
    assert codes.dtype == np.float32
    np.testing.assert_array_equal(codes, model.transform(fast.tolist()))
    decoded = model.inverse_transform(codes)
    np.testing.assert_array_equal(decoded, model.inverse_transform(codes.tolist()))
    # the sigmoid in the decoder's pass: scipy's expit of its logits
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, special.expit(model.decoder_.predict(codes)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.reconstruct(fast), decoded, rtol=1e-6, atol=1e-7)
    bad = fast.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transform(bad)
    bad_codes = codes.copy()
    bad_codes[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        model.inverse_transform(bad_codes)
    with pytest.raises(ValueError, match="expecting 4"):
        model.inverse_transform(np.zeros((rows, 3), np.float32))
    with pytest.raises(ValueError):  # no columns: scikit-learn's check_array says so
        model.inverse_transform(np.zeros((rows, 0), np.float32))


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_sample_decodes_its_draws_in_the_decoders_pass(generative, backend, name):
    """sample(n) decodes prior draws in the decoder's pass: the probabilities (VAE,
    cross-entropy) equal scipy's expit of the decoder's logits for the same draws."""
    models, _ = generative
    model = models[name]
    for n in (1, 4):
        drawn = model.sample(n, random_state=7)
        assert drawn.shape == (n, 64) and drawn.dtype == np.float32
        np.testing.assert_array_equal(drawn, model.sample(n, random_state=7))
    if name == "vae":
        z = model._sampler.sample_prior(4, np.random.default_rng(7), np.float32)
        np.testing.assert_allclose(drawn, special.expit(model.decoder_.predict(z)),
                                   rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------ the network's output activation
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "logistic", "tanh"])
def test_a_networks_output_activation_is_its_numpy_twin(backend, dtype, output):
    net = make_mlp(9, [12, 7], 5, activation="tanh", dtype=dtype, rng=4)
    X = np.random.default_rng(5).standard_normal((6, 9)).astype(dtype)
    logits = net.predict(X)
    name = "sigmoid" if output == "logistic" else output
    want = _reference.activation(name, logits, np.empty_like(logits), 0.0)
    for rows in (1, 6):
        got = net.predict(X[:rows], output)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want[:rows], rtol=50 * np.finfo(dtype).eps,
                                   atol=np.finfo(dtype).eps)
    assert net.predict(X, None) is not logits and np.array_equal(net.predict(X), logits)


def test_a_networks_output_activation_is_refused_where_it_has_no_meaning(backend):
    net = make_mlp(3, [4], 2, output_activation="relu", rng=0)
    with pytest.raises(ValueError, match="identity"):
        net.predict(np.zeros((1, 3), np.float32), "softmax")
    with pytest.raises(ValueError, match="unknown activation"):
        make_mlp(3, [4], 2, rng=0).predict(np.zeros((1, 3), np.float32), "softmaxx")


def test_the_engine_predictor_serves_without_out(compiled):
    from fastbp import engine
    net = make_mlp(9, [12], 5, rng=4)
    X = np.random.default_rng(5).standard_normal((3, 9)).astype(np.float32)
    out = np.empty((3, 5), np.float32)
    with fastbp.use_backend("compiled"):
        predictor = engine.make_predictor(net, "softmax")
        got = predictor.predict(X)
        assert got is not out and np.array_equal(got, predictor.predict(X, out))
        np.testing.assert_array_equal(got, net.predict(X, "softmax"))
    with pytest.raises(ValueError, match="forward passes only"):
        engine.make_trainer(net, "squared_error", engine._NoStep(net.params()), 1,
                            output="softmax")
    with pytest.raises(ValueError, match="unknown output"):
        engine.make_predictor(net, "soft")
