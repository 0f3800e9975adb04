"""The one table of fastbp's activations, losses and optimizer steps (pure Python: setup.py reads it
without NumPy to generate the C header ``fastbp/kernels/_registry.h``, build output).

Everything else derives from it: the input checks' ``ACTIVATIONS``/``LOSSES``
(``fastbp.kernels._checks``), the compiled kernels' and the engine's codes (the C enums of the
generated header, and the names in code order that each compiled module reports back, checked
against this table by tests/test_formulas.py), the engine's tables and which layers may keep A in
Z's buffer.  A code is the entry's position in its table.

Activation fields: ``alpha``, the default of its one parameter (None: takes none);
``slope_from_a``, whether f'(z) can be had from A = f(z) alone (then a layer may keep A in Z's
buffer: ``fastbp.nn.Dense`` does); ``slope_from_sign``, whether f'(z) depends only on the sign of
z, which A keeps when alpha >= 0 (the engine keeps such A in Z's buffer too); ``pre`` and
``slope_pre``, the transcendental array pass f and f' need (_act_span.h's fb_pre: "none",
"exp_negabs" t = exp(-|z|), "log1p_exp_negabs" t = log1p(exp(-|z|)), "expm1_neg2abs"
t = expm1(-2|z|), "expm1_min0" t = expm1(min(z, 0)), "exp_min0" t = exp(min(z, 0)), "normal"
t, u = Phi(z), phi(z)), run over blocks by one shared, AVX2-cloned array function each (the .so
budget has no room for a vectorised copy of exp per activation); ``row``, whether it works on whole
rows (softmax: its own row code) rather than element by element.  An elementwise activation
``name`` is, in C, _formulas.h's pair fb_f_<name>(z, t, u, alpha) and
fb_df_<name>(z, a, da, t, u, alpha) (f, and f' times da, given a = f(z) and the pass's t, u); the
span loops of both compiled paths, kernels and engine (_act_span.h), are generated from this
table.
Loss fields: ``labels``, whether integer class labels are accepted as targets besides arrays of
the output's shape.

Optimizer steps: ``hyper``, the hyperparameters as (name, default, domain) in the order the twin
and the C step take them (a domain is "bool", or an interval such as "[0, 1)", whose bound "tiny"
is the parameter dtype's smallest normal number), each also an attribute of the same name of the
``fastbp.optim`` class (``weight_decay`` one per parameter); ``state``, the state arrays (each of
the parameter's shape) in order, each with the hyperparameter that asks for it (None: always
kept; else kept while that hyperparameter is true or > 0, and absent -- None, NULL -- otherwise);
``counts_steps``, whether the step takes t >= 1, the count of this update.  A step ``name`` is, in
C, _formulas.h's fb_<name>_consts (its loop constants from the hyperparameters and t) and
fb_<name>_step_f/_d (one parameter entry and its state entries); its NumPy twin is
_reference.<name>_update(param, grad, *state, *hyper[, t]); its public kernel
``fastbp.kernels.<name>_update`` and every other table are made from this one.
"""
from collections import namedtuple

Activation = namedtuple("Activation", "name code alpha slope_from_a slope_from_sign pre slope_pre row",
                        defaults=(False,))
Loss = namedtuple("Loss", "name code labels")
Step = namedtuple("Step", "name code hyper state counts_steps")
Hyper = namedtuple("Hyper", "name default domain")


def _table(kind, rows):
    return {row[0]: kind(row[0], code, *row[1:]) for code, row in enumerate(rows)}


ACTIVATIONS = _table(Activation, [
    # name, alpha default, slope from A, slope from the sign of z, array pass of f, of f'
    ("identity", None, True, False, "none", "none"),
    ("sigmoid", None, True, False, "exp_negabs", "none"),
    ("tanh", None, True, False, "expm1_neg2abs", "none"),
    ("relu", None, False, True, "none", "none"),
    ("leaky_relu", 0.01, False, True, "none", "none"),
    ("softplus", None, False, False, "log1p_exp_negabs", "exp_negabs"),
    ("elu", 1.0, False, False, "expm1_min0", "exp_min0"),
    ("gelu", None, False, False, "normal", "normal"),
    ("silu", None, False, False, "exp_negabs", "exp_negabs"),
    ("softmax", None, True, False, "none", "none", True),
])

LOSSES = _table(Loss, [
    ("squared_error", False),
    ("softmax_cross_entropy", True),
    ("sigmoid_cross_entropy", False),
])

_LR, _DECAY = ("lr", 0.01, "[0, inf)"), ("weight_decay", 0.0, "[0, inf)")
STEPS = _table(Step, [
    # name, hyperparameters (name, default, domain), state arrays (name: the hyperparameter that
    # asks for it), whether the step counts t
    ("sgd", [_LR, ("momentum", 0.0, "[0, inf)"), ("nesterov", False, "bool"), _DECAY],
     {"velocity": "momentum"}, False),
    ("adam", [("lr", 0.001, "[0, inf)"), ("beta1", 0.9, "[0, 1)"), ("beta2", 0.999, "[0, 1)"),
              ("eps", 1e-8, "[tiny, inf)"), _DECAY],
     {"m": None, "v": None}, True),
    ("rmsprop", [_LR, ("alpha", 0.99, "[0, 1)"), ("eps", 1e-8, "[tiny, inf)"), _DECAY,
                 ("momentum", 0.0, "[0, inf)"), ("centered", False, "bool")],
     {"square_avg": None, "grad_avg": "centered", "momentum_buffer": "momentum"}, False),
])
STEPS = {name: s._replace(hyper=tuple(Hyper(*h) for h in s.hyper)) for name, s in STEPS.items()}
MAX_HYPER = 8   # hyperparameters of a step (FB_STEP_MAXH: the engine's fb_desc.hyper)
MAX_CONSTS = 12  # loop constants of a step (FB_STEP_MAXK)
MAX_STATE = 3   # state arrays of a step (FB_STEP_MAXS: the C steps take s0, s1, s2)
# every step has an lr (the schedules set it) and a weight_decay (one per parameter: the L2 term)
assert all(len(s.hyper) <= MAX_HYPER and len(s.state) <= MAX_STATE
           and {"lr", "weight_decay"} <= {h.name for h in s.hyper} for s in STEPS.values())


def a_may_share_z(name, alpha):
    """Whether a layer's A may live in Z's buffer: f' is had from A, or from the sign of z that A
    keeps (alpha >= 0)."""
    entry = ACTIVATIONS[name]
    return entry.slope_from_a or (entry.slope_from_sign and (alpha or 0.0) >= 0)


def c_header():
    """The C header of the codes (written by setup.py to fastbp/kernels/_registry.h): one enum per
    table, FB_<NAME> = code and FB_<TABLE>_COUNT, the names in code order (fb_<table>_names, by which
    the kernels look a name up), and the same as one comma-separated string (FB_<TABLE>_NAMES),
    which the engine reports back; and FB_ACTIVATION_ELEMENTWISE(X), the X-macro list
    X(FB_<NAME>, <name>, FB_PRE_<PRE>, FB_PRE_<SLOPE_PRE>) of the elementwise activations, from
    which _act_span.h generates the span loops; the steps' limits FB_STEP_MAXH, FB_STEP_MAXK,
    FB_STEP_MAXS, fb_step_shape[code] (its hyperparameter and state counts, the bit mask of the
    states it always keeps, whether it counts t: the compiled kernel's guard), and FB_STEPS(X), the list X(FB_<NAME>, <name>) of the optimizer steps, from
    which _formulas.h's fb_step_consts and _step_span.h's loops are generated."""
    lines = ["/* Generated by setup.py from fastbp/kernels/registry.py: build output, do not edit. */",
             "#ifndef FASTBP_REGISTRY_H", "#define FASTBP_REGISTRY_H"]
    for table, entries in (("ACTIVATION", ACTIVATIONS), ("LOSS", LOSSES), ("STEP", STEPS)):
        names = list(entries)
        lines.append("enum { " + ", ".join(f"FB_{n.upper()} = {entries[n].code}" for n in names) + " };")
        lines.append(f"enum {{ FB_{table}_COUNT = {len(names)} }};")
        lines.append(f"static const char *const fb_{table.lower()}_names[] __attribute__((unused)) = {{"
                     + ", ".join(f'"{n}"' for n in names) + "};")
        lines.append(f'#define FB_{table}_NAMES "{",".join(names)}"')
    lines.append("#define FB_ACTIVATION_ELEMENTWISE(X) " + " ".join(
        f"X(FB_{a.name.upper()}, {a.name}, FB_PRE_{a.pre.upper()}, FB_PRE_{a.slope_pre.upper()})"
        for a in ACTIVATIONS.values() if not a.row))
    lines.append(f"enum {{ FB_STEP_MAXH = {MAX_HYPER}, FB_STEP_MAXK = {MAX_CONSTS}, "
                 f"FB_STEP_MAXS = {MAX_STATE} }};")
    lines.append("typedef struct { int hyper, states, required, counts_steps; } fb_step_shape_t;")
    lines.append("static const fb_step_shape_t fb_step_shape[] __attribute__((unused)) = {" + ", ".join(
                     f"{{{len(s.hyper)}, {len(s.state)}, "
                     f"{sum(1 << j for j, c in enumerate(s.state.values()) if c is None)}, "
                     f"{int(s.counts_steps)}}}" for s in STEPS.values()) + "};")
    lines.append("#define FB_STEPS(X) " + " ".join(f"X(FB_{s.name.upper()}, {s.name})"
                                                   for s in STEPS.values()))
    lines.append("#endif")
    return "\n".join(lines) + "\n"
