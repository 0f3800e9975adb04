"""Mode coverage of fastbp.GAN on the standard toy problems, remedies x problems (issue 14).

Problems (2000 training rows each, every mode equally likely):

- ``mix2-6``, ``mix2-10``, ``mix3-6``, ``mix3-10``: 1-D mixtures of 2 and 3 Gaussians of std 1
  whose neighbouring means are 6 and 10 std apart;
- ``ring``: the 2-D ring of 8 Gaussians of radius 2 and std 0.02 (Metz et al. 2016, "Unrolled
  Generative Adversarial Networks");
- ``grid``: the 5 x 5 grid of Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05 (Dumoulin et al. 2017,
  ALI; VEEGAN, Srivastava et al. 2017).

Metrics on 2500 samples of each fitted model, every sample assigned to its nearest mode:

- ``share min``/``share max``: the smallest and largest share of samples of a mode over its fair
  share 1/C (1 everywhere is perfect; 0 is a lost mode);
- ``modes``: modes covered, a mode being covered when the samples within 3 std of it are at
  least a quarter of its fair share;
- ``near``: the fraction of samples within 3 std of a mode.

The floors (5 seeds each, default settings apart from the data): every mode of the 1-D mixtures
holds between 0.4 and 1.6 times its fair share in every seed (the stricter reading: at least 0.8
times); the ring covers at least 7 of 8 modes with at least 80% of samples within 3 std of a mode
in at least 4 of 5 seeds.  A remedy is a set of GAN parameters on top of the defaults
(``REMEDIES``).

Run (it imports fastbp from the path: ``PYTHONPATH=.`` in a source tree)::

    python benchmarks/bench_gan_modes.py                       # every remedy, problem, 5 seeds
    python benchmarks/bench_gan_modes.py --remedy default --problem ring --seeds 2

It prints one row per remedy and problem (means over seeds, and in how many seeds the floor held)
and the time per fit.
"""
import argparse
import time

import numpy as np
import pandas as pd

import fastbp

N_ROWS, N_SAMPLES = 2000, 2500


def _modes(problem):
    """(the mode centres, C x d; the std of each)."""
    if problem.startswith("mix"):
        n_modes, separation = map(int, problem[3:].split("-"))
        return separation * (np.arange(n_modes) - (n_modes - 1) / 2)[:, None], 1.0
    if problem == "ring":
        angles = 2 * np.pi * np.arange(8) / 8
        return 2 * np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.02
    if problem == "grid":
        axis = np.arange(-4.0, 5.0, 2.0)
        return np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2), 0.05
    raise ValueError(f"unknown problem {problem!r}")


PROBLEMS = ("mix2-6", "mix2-10", "mix3-6", "mix3-10", "ring", "grid")


def toy_data(problem, n=N_ROWS, seed=0):
    """n rows of the problem's mixture, and its modes and std."""
    centres, std = _modes(problem)
    rng = np.random.default_rng(seed)
    X = centres[rng.integers(0, len(centres), n)] + std * rng.standard_normal((n, centres.shape[1]))
    return X, centres, std


def mode_metrics(samples, centres, std):
    """{'share min', 'share max', 'modes', 'near'} of ``samples`` (see the module docstring)."""
    distances = np.linalg.norm(samples[:, None, :] - centres[None], axis=2)
    nearest = distances.argmin(axis=1)
    near = distances[np.arange(len(samples)), nearest] < 3 * std
    C = len(centres)
    share = np.bincount(nearest, minlength=C) / len(samples) * C
    near_share = np.bincount(nearest[near], minlength=C) / len(samples) * C
    return {"share min": share.min(), "share max": share.max(),
            "modes": int(np.sum(near_share >= 0.25)), "near": near.mean()}


def floor_held(problem, metrics):
    """(the issue's floor, the stricter reading for mixtures) for one seed's metrics."""
    if problem.startswith("mix"):
        lenient = 0.4 <= metrics["share min"] and metrics["share max"] <= 1.6
        return lenient, metrics["share min"] >= 0.8
    C = len(_modes(problem)[0])
    return metrics["modes"] >= C - 1 and metrics["near"] >= 0.8, None


# name -> GAN parameters on top of the defaults: the defaults, each remedy of theirs taken away,
# and the defaults before issue 14 (none of them, minibatches of 200)
BEFORE = dict(batch_size=200, minibatch_std=False, generator_average=0.0,
              learning_rate_init=0.001)
REMEDIES = {
    "default": {},
    "no minibatch_std": dict(minibatch_std=False),
    "no generator_average": dict(generator_average=0.0),
    "batch_size=200": dict(batch_size=200),
    "learning_rate_init=0.001": dict(learning_rate_init=0.001),
    "before issue 14": BEFORE,
}


def run(remedy, problem, seed):
    """One fit: its metrics, floor flags and seconds."""
    X, centres, std = toy_data(problem, seed=seed)
    gan = fastbp.GAN(random_state=seed, **REMEDIES[remedy])
    started = time.perf_counter()
    gan.fit(X)
    seconds = time.perf_counter() - started
    metrics = mode_metrics(gan.sample(N_SAMPLES, random_state=seed + 100).astype(np.float64),
                           centres, std)
    lenient, strict = floor_held(problem, metrics)
    return {**metrics, "floor": lenient, "strict": strict, "seconds": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remedy", nargs="*", default=list(REMEDIES), choices=list(REMEDIES))
    parser.add_argument("--problem", nargs="*", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    for remedy in args.remedy:
        for problem in args.problem:
            runs = pd.DataFrame([run(remedy, problem, seed) for seed in range(args.seeds)])
            row = {"remedy": remedy, "problem": problem,
                   **runs[["share min", "share max", "modes", "near", "seconds"]].mean(),
                   "worst share": runs["share min"].min(),
                   "floor seeds": f"{int(runs['floor'].sum())}/{args.seeds}"}
            if problem.startswith("mix"):
                row["strict seeds"] = f"{int(runs['strict'].sum())}/{args.seeds}"
            rows.append(row)
            print(pd.DataFrame([row]).to_string(index=False, header=len(rows) == 1,
                                               float_format="%.2f"), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.2f"))


if __name__ == "__main__":
    main()
