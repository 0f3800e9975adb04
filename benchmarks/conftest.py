"""Benchmark helpers: the summary that bench_kernels.py's runs end with.

``record_speed`` keeps each benchmark's fastest round; at the end of the run one line per kernel
and shape gives the NumPy twin's time, the compiled time, their ratio and whether the ratio meets
the kernel's speed floor.  The fastest round (not the mean) is what a busy machine distorts least.
"""
import pytest

_FASTEST = {}  # (kernel, shape) -> {"numpy": seconds, "compiled": seconds, "floor": ratio or None}


@pytest.fixture
def record_speed():
    """``record_speed(kernel, shape, backend, floor, benchmark)``, after ``benchmark(...)`` ran."""
    def record(kernel, shape, backend, floor, benchmark):
        stats = getattr(benchmark, "stats", None)
        if stats is not None:  # None with --benchmark-disable
            entry = _FASTEST.setdefault((kernel, shape), {"floor": floor})
            entry[backend] = stats.stats.min
    return record


def pytest_terminal_summary(terminalreporter):
    rows = [(kernel, shape, entry) for (kernel, shape), entry in _FASTEST.items()
            if "numpy" in entry and "compiled" in entry]
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("compiled vs NumPy twin: fastest round, float32, public API")
    write(f"{'kernel':42s} {'shape':>10s} {'twin us':>10s} {'compiled us':>12s} {'ratio':>7s}  floor")
    below = 0
    for kernel, (n, width), entry in rows:
        ratio = entry["numpy"] / entry["compiled"]
        floor = entry["floor"]
        verdict = "" if floor is None else f">= {floor:g}x " + ("ok" if ratio >= floor else "BELOW")
        below += floor is not None and ratio < floor
        write(f"{kernel:42s} {f'{n}x{width}':>10s} {entry['numpy'] * 1e6:10.1f} "
              f"{entry['compiled'] * 1e6:12.1f} {ratio:6.2f}x  {verdict}")
    write(f"{below} of {len(rows)} below their floor")
