"""Build the compiled modules: every ``fastbp/<subpackage>/_c_*.pyx`` becomes one extension module
(``fastbp.kernels._c_linear``, ``fastbp.engine._c_train``, ...).

Release builds (the default) are optimised, carry no debug info and are stripped, with only
distributable flags (no ``-march=native``, no ``-ffast-math``).  ``-fno-trapping-math`` (no program
traps on floating-point exceptions; results unchanged) lets gcc vectorise loops with selects, such
as ReLU's.  ``FASTBP_DEBUG=1`` at build time turns on Cython's bounds and initialisation checks and
keeps debug info, for memory-error hunts.
"""
import glob
import importlib.util
import os

import numpy
from Cython.Build import cythonize
from Cython.Compiler import Options
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTBP_DEBUG", "0") not in ("", "0")

Options.docstrings = True
Options.emit_code_comments = False  # generated C stays small and free of source echoes

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": False,
    "binding": False,
}

if DEBUG:
    compile_args, link_args = ["-O0", "-g3"], []
else:
    compile_args = ["-O3", "-g0", "-fno-math-errno", "-fno-trapping-math",
                    "-fno-asynchronous-unwind-tables"]  # C code needs no unwind tables: smaller files
    # -z noseparate-code: the read-only data share the code's pages instead of each starting a page
    # of its own (GNU ld's default since 2.31 pads ~4-8 KB per file; older linkers ignore it)
    link_args = ["-s", "-Wl,-z,noseparate-code"]

# the kernels' C headers (_vmath.h, _formulas.h, _registry.h) are the engine's too: one home for
# the element math and the codes
KERNEL_HEADERS = os.path.join("fastbp", "kernels")


def write_header(source, header):
    """Generated C headers (build output): fastbp/kernels/_registry.h from registry.py, the one
    table of activations, losses and optimizer steps, and fastbp/engine/_layout.h from layout.py,
    the engine's network description; rewritten only when they change (no needless rebuild)."""
    spec = importlib.util.spec_from_file_location("_fastbp_" + os.path.basename(source)[:-3],
                                                  source)  # without fastbp (which needs NumPy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.c_header()
    if not os.path.exists(header) or open(header).read() != text:
        with open(header, "w") as f:
            f.write(text)


write_header(os.path.join(KERNEL_HEADERS, "registry.py"), os.path.join(KERNEL_HEADERS, "_registry.h"))
write_header(os.path.join("fastbp", "engine", "layout.py"), os.path.join("fastbp", "engine", "_layout.h"))

extensions = [
    Extension(
        name=os.path.splitext(path)[0].replace(os.sep, "."),
        sources=[path],
        include_dirs=[numpy.get_include(), os.path.dirname(path), KERNEL_HEADERS],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        depends=sorted(glob.glob(os.path.join("fastbp", "*", "*.h"))),  # rebuild when a header changes
    )
    for path in sorted(glob.glob(os.path.join("fastbp", "*", "_c_*.pyx")))
    # developers may rebuild a subset: FASTBP_BUILD_ONLY=_c_linear,_c_loss
    if not os.environ.get("FASTBP_BUILD_ONLY")
    or os.path.basename(path)[:-4] in os.environ["FASTBP_BUILD_ONLY"].split(",")
]

if not extensions and not os.environ.get("FASTBP_BUILD_ONLY"):
    raise SystemExit("no fastbp/*/_c_*.pyx found: refusing to build fastbp without its compiled kernels")



class BuildExt(build_ext):
    """build_ext without run-time search paths: a Python whose LDSHARED carries
    ``-Wl,-rpath,<its lib folder>`` (pyenv's, for one) would otherwise write a RUNPATH to the build
    machine's Python into every .so (auditwheel keeps it).  The modules need no search path: they
    link only libc."""

    def build_extensions(self):
        for attribute in ("linker_so", "linker_so_cxx"):
            command = getattr(self.compiler, attribute, None)
            if command:
                setattr(self.compiler, attribute,
                        [arg for arg in command if not arg.startswith(("-Wl,-rpath", "-Wl,-R"))])
        super().build_extensions()


# build_support/ first on Cython's include path: SciPy's cython_blas declarations without SciPy
setup(ext_modules=cythonize(extensions, compiler_directives=directives, quiet=True,
                            include_path=["build_support"]),
      cmdclass={"build_ext": BuildExt})
