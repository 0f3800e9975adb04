"""Writes the format-1 model files that test_model_files.py loads (old files must keep loading).

Run once with the fastbp that wrote format 1 (commit 793ac52):
    PYTHONPATH=. FASTBP_BACKEND=numpy python tests/data/make_models_v1.py
It writes models_v1_<name>.npz and models_v1.json: the inputs and what each model predicted.
"""
import json
import warnings
from pathlib import Path

import numpy as np

import fastbp

HERE = Path(__file__).resolve().parent


def main():
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    models = {
        "classifier_str": fastbp.MLPClassifier((4,), max_iter=3, random_state=0).fit(
            X, np.array(["ant", "bee", "cat"])[y]),
        "classifier_bool_f64": fastbp.MLPClassifier((3,), max_iter=3, dtype="float64",
                                                    random_state=0).fit(X, y > 0),
        "regressor": fastbp.MLPRegressor((3, 2), activation="tanh", max_iter=3,
                                         random_state=0).fit(X, X[:, :2] ** 2),
        "autoencoder": fastbp.Autoencoder(2, (3,), max_iter=3, random_state=0).fit(X),
    }
    outputs = {"X": X.tolist()}
    for name, model in models.items():
        model.save(HERE / f"models_v1_{name}.npz")
        predict = getattr(model, "predict", None) or model.transform
        outputs[name] = predict(X).tolist()
    (HERE / "models_v1.json").write_text(json.dumps(outputs, indent=1) + "\n")


if __name__ == "__main__":
    main()
