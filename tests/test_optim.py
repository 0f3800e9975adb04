"""fastbp.optim's optimizers beyond their steps' values (held to the twins and PyTorch elsewhere):
hyperparameters set after construction are checked again, on both training paths; the
estimators' errors speak their parameters' names."""
import numpy as np
import pytest

import fastbp
from fastbp import engine, training
from fastbp.nn import make_mlp
from fastbp.optim import SGD, Adam, RMSprop


@pytest.mark.parametrize("make, name, bad", [
    (lambda p: Adam(p), "beta1", 1.0), (lambda p: Adam(p), "eps", 0.0),
    (lambda p: RMSprop(p), "alpha", -0.1), (lambda p: SGD(p), "lr", float("nan")),
    (lambda p: SGD(p), "lr", "fast")])
def test_a_hyperparameter_set_after_construction_is_checked_at_the_step(make, name, bad, backend):
    params = [np.ones(3, np.float32)]
    opt = make(params)
    setattr(opt, name, bad)
    with pytest.raises((ValueError, TypeError), match=name):
        opt.step([np.ones(3, np.float32)])
    np.testing.assert_array_equal(params[0], 1)  # refused before any change


def test_the_engine_checks_them_again_before_an_epoch(compiled):
    if engine._c_train is None:
        pytest.skip("fastbp.engine._c_train is not built")
    net = make_mlp(4, [5], 3, rng=0)
    opt = Adam(net.params(), lr=0.01)
    X = np.ones((8, 4), np.float32)
    Y = np.zeros((8, 3), np.float32)
    order = np.arange(8, dtype=np.intp)
    with fastbp.use_backend("compiled"):
        trainer = engine.make_trainer(net, "squared_error", opt, 4)
        trainer.train_epoch(X, Y, order, np.zeros(2))
        before = [p.copy() for p in net.params()]
        opt.beta2 = 1.5
        with pytest.raises(ValueError, match="beta2"):
            trainer.train_epoch(X, Y, order, np.zeros(2))
    for a, b in zip(before, net.params()):
        np.testing.assert_array_equal(a, b)


def test_estimator_errors_name_the_estimators_parameter(backend):
    X, y = fastbp.load_digits()
    with pytest.raises(ValueError, match=r"^epsilon must be in"):  # the optimizer's eps
        fastbp.MLPClassifier((8,), epsilon=1e-40, max_iter=1).fit(X[:50], y[:50])


def test_sgd_velocities_is_the_velocity_state():
    opt = SGD([np.ones(2)], momentum=0.5)
    assert opt.velocities is opt.velocity and len(opt.velocity) == 1
    assert SGD([np.ones(2)]).velocities is None


def test_weight_decay_of_another_length_is_named(backend):
    opt = Adam([np.ones(2), np.ones(3)])
    opt.weight_decay = [0.1]
    with pytest.raises(ValueError, match="weight_decay"):
        opt.step([np.ones(2), np.ones(3)])
    assert training.CONFIG_NAMES["eps"] == "epsilon"
