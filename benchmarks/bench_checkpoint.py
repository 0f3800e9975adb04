"""Memory for time: ``checkpoint_segments`` on the hourglass 784-1000-500-250-30-250-500-1000-784
(relu, linear code, identity output, squared error), batch 1024, float32, Adam, layer by layer
(issue 12 item 3; the lecture's slide 19: storing every layer "saves time but also uses up a lot
of memory").

For storing every layer (``None``) and 1, 2, sqrt(L) = 3 and L = 8 segments it prints

- the activation bytes by count (``Sequential.buffer_nbytes``: what the network holds for a
  training step) and the forward values among them (every layer's Z and A, or the checkpoints,
  the kept dropout masks and the shared workspace; the rest is the backward's dZ, dX and the
  loss gradient);
- the peak of NumPy's allocations over two training steps from a fresh network (tracemalloc,
  above what was allocated before: the parameters, gradients and Adam's state are not in it);
- the median time per step over interleaved rounds (``ROUNDS`` of them, one step of each
  setting per round; the compiled engine's step, which stores everything, as a reference);

and the floors of ``floors.CHECKPOINT``.  Run with ``pytest benchmarks/bench_checkpoint.py -s``
(or ``python benchmarks/bench_checkpoint.py``).
"""
import time
import tracemalloc

import numpy as np

import fastbp
from fastbp import training
from fastbp.nn import Dense, Sequential
from fastbp.optim import Adam

try:
    from floors import CHECKPOINT
except ImportError:  # run as a script from elsewhere
    from benchmarks.floors import CHECKPOINT

SIZES = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
BATCH, ROUNDS = 1024, 7
SETTINGS = [None, 1, 2, "sqrt", 8]


def _network(segments):
    layers = [Dense(d, k, "identity" if i in (3, 7) else "relu", rng=i)
              for i, (d, k) in enumerate(zip(SIZES, SIZES[1:]))]
    return Sequential(layers, checkpoint_segments=segments)


def _stepper(segments, X, engine=False):
    """A network and a callable running one training step with Adam, layer by layer or as the
    compiled engine's epoch of one step (its trainer made by the first step: the engine's
    buffers count in that step's peak)."""
    net = _network(segments)
    optimizer = Adam(net.params(), lr=1e-4)
    order, norms, trainer = np.arange(BATCH), np.zeros(len(SIZES) - 1), []

    def step():
        if not trainer:
            if engine:
                made, path = training.make_trainer(net, "squared_error", optimizer, BATCH)
                # the engine's epochs store everything; its passes recompute the segments
                assert path == ("engine" if segments is None else
                                f"engine steps (checkpoint_segments={segments!r} (the engine's "
                                "epochs store every layer's values))"), path
            else:
                made = training.LayerwiseTrainer(net, "squared_error", optimizer, BATCH)
            trainer.append(made)
        return trainer[0].train_epoch(X, X, order, norms)
    step.trainer = trainer
    return net, step


def _engine_bytes(made):
    """(buffer bytes, forward-value bytes) of the engine's arrays for training steps: its epoch
    trainer's, or its passes' (``made``: the trainer; a shared workspace counted once)."""
    trainers = ([run._trainer for _, _, run in made.engine_passes]
                if hasattr(made, "engine_passes") else [made])
    dx = [run._dX for _, _, run in made.engine_passes] if hasattr(made, "engine_passes") else []

    def total(arrays):
        seen = {}
        for a in arrays:
            if a is not None:
                base = a if a.base is None else a.base
                seen[id(base)] = base.nbytes
        return sum(seen.values())
    values = [a for t in trainers for a in t._Z + t._A + t._D]
    others = [a for t in trainers for a in t._dZ + [t._dw_scratch, t._Xb]] + dx
    return total(values + others), total(values)


def _forward_values(net):
    """The bytes of the forward values a step keeps (see the module docstring)."""
    segments = net._segments
    if segments is None:
        total = 0
        for layer in net.layers:
            for Z, A, _, _ in layer._cache._by_size.values():
                total += Z.nbytes + (A.nbytes if A is not Z else 0)
        return total
    return sum(a.nbytes for made, _, dZ, dX in segments._cache._by_size.values()
               for a in made if a is not dZ and a is not dX[0] and a is not dX[1])


def _memory(segments, X, engine=False):
    """(buffer bytes, forward-value bytes, tracemalloc peak above the start) over two steps."""
    net, step = _stepper(segments, X, engine)  # the parameters and Adam's state: not counted
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        step()
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    if engine:
        return (*_engine_bytes(step.trainer[0]), peak)
    return net.buffer_nbytes(), _forward_values(net), peak


def table():
    """Measure and print; returns {setting: (buffer bytes, values, peak, seconds per step)}."""
    X = np.random.default_rng(0).random((BATCH, SIZES[0]), dtype=np.float32)
    names = {None: "store", 1: "1 segment", 2: "2 segments", "sqrt": "sqrt(L) = 3 segments",
             8: "L = 8 segments"}
    rows = {setting: _memory(setting, X) for setting in SETTINGS}
    steps = {setting: _stepper(setting, X)[1] for setting in SETTINGS}
    engine = fastbp.backend() == "compiled"
    if engine:
        rows["engine"] = _memory(None, X, engine=True)
        steps["engine"] = _stepper(None, X, engine=True)[1]
        names["engine"] = "engine (stores everything)"
        for segments in (2, "sqrt"):  # the engine's passes, one workspace, segments recomputed
            rows[("engine", segments)] = _memory(segments, X, engine=True)
            steps[("engine", segments)] = _stepper(segments, X, engine=True)[1]
            names[("engine", segments)] = f"engine steps, {names[segments]}"
    times = {setting: [] for setting in steps}
    for step in steps.values():
        step()  # warm
    for _ in range(ROUNDS):
        for setting, step in steps.items():
            started = time.perf_counter()
            step()
            times[setting].append(time.perf_counter() - started)
    store = rows[None]
    base = float(np.median(times[None]))
    print(f"\n{'-'.join(map(str, SIZES))}, batch {BATCH}, float32, Adam, layer by layer "
          f"({fastbp.backend()} backend); median of {ROUNDS} interleaved rounds; the machine is "
          "shared, times are noisy")
    print(f"{'setting':<36}{'buffers MB':>11}{'ratio':>7}{'values MB':>11}{'ratio':>7}"
          f"{'peak MB':>9}{'ratio':>7}{'ms/step':>9}{'ratio':>7}")
    result = {}
    for setting, (buffers, values, peak) in rows.items():
        seconds = float(np.median(times[setting]))
        result[setting] = (buffers, values, peak, seconds)
        cells = [f"{buffers / 2**20:>11.1f}{buffers / store[0]:>7.2f}" if buffers else " " * 18,
                 f"{values / 2**20:>11.1f}{values / store[1]:>7.2f}" if values else " " * 18,
                 f"{peak / 2**20:>9.1f}{peak / store[2]:>7.2f}",
                 f"{seconds * 1e3:>9.1f}{seconds / base:>7.2f}"]
        print(f"{names[setting]:<36}" + "".join(cells))
    best = min((s for s in SETTINGS if s is not None), key=lambda s: result[s][0])
    memory, seconds = result[best][0] / store[0], result[best][3] / base
    print(f"floors at {names[best]}: buffers {memory:.2f}x <= {CHECKPOINT['memory']}x "
          f"{'met' if memory <= CHECKPOINT['memory'] else 'MISSED'}; time {seconds:.2f}x <= "
          f"{CHECKPOINT['time']}x {'met' if seconds <= CHECKPOINT['time'] else 'MISSED'}")
    if engine:  # the engine's passes against its epochs: buffers (the engine's) and time
        for segments in (2, "sqrt"):
            memory = result[("engine", segments)][0] / result["engine"][0]
            seconds = result[("engine", segments)][3] / result["engine"][3]
            print(f"engine floors at {names[segments]}: buffers {memory:.2f}x <= "
                  f"{CHECKPOINT['memory']}x {'met' if memory <= CHECKPOINT['memory'] else 'MISSED'}"
                  f"; time {seconds:.2f}x <= {CHECKPOINT['time']}x "
                  f"{'met' if seconds <= CHECKPOINT['time'] else 'MISSED'}")
    return result


def test_checkpoint_table():
    table()


if __name__ == "__main__":
    table()
