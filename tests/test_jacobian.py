"""``fastbp.jacobian`` (issue 15, item 3): the Jacobian of an estimator's outputs with respect to its
inputs (n x k x d) and, for one sample, to a weight array, held to central finite differences of
the estimator's own public methods (float64 models) and, when PyTorch is installed, to
``torch.autograd.functional.jacobian`` of the same network rebuilt in PyTorch."""
import warnings

import numpy as np
import pytest

import fastbp

H = 1e-6


@pytest.fixture(scope="module")
def data():
    X, y = fastbp.load_digits()
    return X[:150].astype(np.float64), y[:150]


def _fit(model, *data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        return model.fit(*data)


def _columns(values):
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)


def _input_differences(f, X):
    """n x k x d central differences of f (rows -> rows of outputs) at every row of X."""
    slopes = []
    for j in range(X.shape[1]):
        step = np.zeros_like(X)
        step[:, j] = H
        slopes.append((_columns(f(X + step)) - _columns(f(X - step))) / (2 * H))
    return np.stack(slopes, axis=2)


MODELS = {
    "classifier-multiclass": (lambda: fastbp.MLPClassifier((7, 5), activation="tanh", dtype="float64",
                                                           max_iter=3, random_state=0), "y",
                              "predict_proba"),
    "classifier-binary": (lambda: fastbp.MLPClassifier((6,), activation="gelu", dtype="float64",
                                                       max_iter=3, random_state=0), "y2",
                          "predict_proba"),
    "classifier-multilabel": (lambda: fastbp.MLPClassifier((6,), activation="softplus",
                                                           dtype="float64", max_iter=3,
                                                           random_state=0), "multilabel",
                              "predict_proba"),
    "regressor": (lambda: fastbp.MLPRegressor((6,), activation="elu", dtype="float64", max_iter=3,
                                              random_state=0), "y", "predict"),
    "autoencoder-transform": (lambda: fastbp.Autoencoder(3, (8,), activation="silu", dtype="float64",
                                                         max_iter=3, random_state=0), None,
                              "transform"),
    "autoencoder-reconstruct": (lambda: fastbp.Autoencoder(3, (8,), loss="cross_entropy",
                                                           dtype="float64", max_iter=3,
                                                           random_state=0), None, "reconstruct"),
    "vae-transform": (lambda: fastbp.VAE(3, (8,), activation="tanh", dtype="float64", max_iter=3,
                                         random_state=0), None, "transform"),
    "vae-reconstruct": (lambda: fastbp.VAE(2, (8,), loss="cross_entropy", dtype="float64",
                                           max_iter=3, random_state=0), None, "reconstruct"),
    "gan-discriminator": (lambda: fastbp.GAN(3, (8,), (6,), dtype="float64", max_iter=1,
                                             batch_size=50, random_state=0), None,
                          "decision_function"),
}


def _fitted(name, data):
    make, target, method = MODELS[name]
    X, y = data
    targets = {"y": y, "y2": y % 2, "multilabel": np.stack([y % 2, y > 4], axis=1).astype(int)}
    model = _fit(make(), X) if target is None else _fit(make(), X, targets[target])
    return model, method


@pytest.mark.parametrize("name", list(MODELS))
def test_input_jacobian_matches_finite_differences(name, data):
    model, method = _fitted(name, data)
    X = data[0][:3]
    J = fastbp.jacobian(model, X, method=method)
    expected = _input_differences(getattr(model, method), X)
    assert J.shape == expected.shape and J.dtype == np.float64
    np.testing.assert_allclose(J, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("method", ["inverse_transform", "sample"])
def test_jacobian_of_decoders_and_generator(data, method):
    """Inputs that are not data: codes for inverse_transform, noise for the GAN's generator."""
    X = data[0]
    if method == "sample":
        model = _fit(fastbp.GAN(4, (8,), (6,), output_activation="sigmoid", dtype="float64",
                                max_iter=1, batch_size=50, random_state=0), X)
        Z = np.random.default_rng(0).standard_normal((3, 4))
        generate = model.average_generator_.predict  # what sample() applies to its draws
    else:
        model = _fit(fastbp.VAE(3, (8,), loss="cross_entropy", dtype="float64", max_iter=2,
                                random_state=0), X)
        Z = model.transform(X[:3])
        generate = model.inverse_transform
    J = fastbp.jacobian(model, Z, method=method)
    assert J.shape == (3, X.shape[1], Z.shape[1])
    np.testing.assert_allclose(J, _input_differences(generate, Z), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["classifier-multiclass", "classifier-binary", "regressor",
                                  "vae-transform"])
def test_weight_jacobian_matches_finite_differences(name, data):
    model, method = _fitted(name, data)
    x = data[0][:1]
    f = getattr(model, method)
    for weights in (model.coefs_[0], model.intercepts_[-1] if "vae" not in name
                    else model.coefs_[1]):
        J = fastbp.jacobian(model, x, method=method, wrt=weights)
        assert J.shape == (_columns(f(x)).shape[1], *weights.shape)
        entries = np.random.default_rng(0).choice(weights.size, min(weights.size, 12), replace=False)
        flat = weights.reshape(-1)  # the model's own array: perturbed in place, then restored
        for entry in entries:
            original = flat[entry]
            flat[entry] = original + H
            up = _columns(f(x))[0]
            flat[entry] = original - H
            down = _columns(f(x))[0]
            flat[entry] = original
            index = np.unravel_index(entry, weights.shape)
            np.testing.assert_allclose(J[(slice(None), *index)], (up - down) / (2 * H),
                                       rtol=1e-6, atol=1e-8)


def test_vae_code_ignores_the_log_variance_units(data):
    model, _ = _fitted("vae-transform", data)
    J = fastbp.jacobian(model, data[0][:1], method="transform", wrt=model.coefs_[1])
    assert J.shape == (3, *model.coefs_[1].shape)
    assert not J[:, :, 3:].any() and J[:, :, :3].any()


def test_jacobian_errors(data):
    X, y = data
    model, _ = _fitted("regressor", data)
    with pytest.raises(fastbp.NotFittedError):
        fastbp.jacobian(fastbp.MLPRegressor(), X[:2])
    with pytest.raises(ValueError, match="exports the methods"):
        fastbp.jacobian(model, X[:2], method="transform")
    with pytest.raises(ValueError, match="X has 3 features"):
        fastbp.jacobian(model, X[:2, :3])
    with pytest.raises(ValueError, match="NaN"):
        fastbp.jacobian(model, np.full((1, X.shape[1]), np.nan))
    with pytest.raises(ValueError, match="for one sample"):
        fastbp.jacobian(model, X[:2], wrt=model.coefs_[0])
    with pytest.raises(ValueError, match="wrt must be 'X' or one of the estimator's weight"):
        fastbp.jacobian(model, X[:1], wrt=model.coefs_[0].copy())


def test_matches_torch_autograd(data):
    torch = pytest.importorskip("torch")
    X, y = data
    model = _fit(fastbp.MLPClassifier((7, 5), activation="gelu", dtype="float64", max_iter=3,
                                      random_state=0), X, y)
    weights = [torch.from_numpy(W.copy()) for W in model.coefs_]
    biases = [torch.from_numpy(b.copy()) for b in model.intercepts_]
    x = torch.from_numpy(X[:1].copy())

    def proba(x, first=weights[0]):
        for i, (W, b) in enumerate(zip([first, *weights[1:]], biases)):
            x = x @ W + b
            x = torch.nn.functional.gelu(x) if i < len(weights) - 1 else torch.softmax(x, dim=-1)
        return x

    by_input = torch.autograd.functional.jacobian(proba, x).numpy()[:, :, 0, :]  # 1 x k x d
    np.testing.assert_allclose(fastbp.jacobian(model, X[:1]), by_input, rtol=1e-10, atol=1e-12)
    by_weights = torch.autograd.functional.jacobian(lambda W: proba(x, W), weights[0]).numpy()[0]
    np.testing.assert_allclose(fastbp.jacobian(model, X[:1], wrt=model.coefs_[0]), by_weights,
                               rtol=1e-10, atol=1e-12)
