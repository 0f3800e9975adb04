"""Writes the VAE files of format 1 that test_model_files.py loads (old VAE files must keep loading).

Run once with the fastbp before the learned prior and decoder variance (commit 8f6b306):
    PYTHONPATH=. FASTBP_BACKEND=numpy python tests/data/make_vae_v1.py
It writes models_v1_vae_<name>.npz and models_v1_vae.json: the inputs, each model's codes
(``transform``) and samples (``sample(4, random_state=0)``).
"""
import json
import warnings
from pathlib import Path

import numpy as np

import fastbp

HERE = Path(__file__).resolve().parent


def main():
    warnings.simplefilter("ignore")
    X = np.random.default_rng(0).standard_normal((12, 3))
    models = {
        "standard": fastbp.VAE(2, (3,), max_iter=3, random_state=0).fit(X),
        "mixture": fastbp.VAE(2, (3,), decoder_std=0.5, prior_means=[[1.0, 0.0], [-1.0, 0.5]],
                              prior_std=0.7, dtype="float64", max_iter=3, random_state=0).fit(X),
    }
    outputs = {"X": X.tolist()}
    for name, model in models.items():
        model.save(HERE / f"models_v1_vae_{name}.npz")
        outputs[name] = {"transform": model.transform(X).tolist(), "score": model.score(X),
                         "sample": model.sample(4, random_state=0).tolist()}
    (HERE / "models_v1_vae.json").write_text(json.dumps(outputs, indent=1) + "\n")


if __name__ == "__main__":
    main()
