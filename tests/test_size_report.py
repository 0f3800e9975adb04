"""``fastbp size``: its numbers are checked against the files it measured.

Small shared libraries are compiled here with ``cc`` (release/stripped, with symbols, with debug
info, with and without AVX2 behind a CPU check), so these tests do not depend on fastbp's kernels;
the installed package and a wheel are measured too.  The last tests take an installed copy of
fastbp, make its compiled modules foreign (another Python's tag, another machine's ELF header)
and check that fastbp falls back to NumPy with its warning.

Independent references: ``os.path.getsize``, the zip directory, and ``readelf`` (binutils) for
section sizes, where it is installed.
"""
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from fastbp.tools import size_report

CC = shutil.which("cc") or shutil.which("gcc")
READELF = shutil.which("readelf")
OBJDUMP = shutil.which("objdump")
EXT = sysconfig.get_config_var("EXT_SUFFIX") or ".so"       # e.g. .cpython-311-x86_64-linux-gnu.so
X86_64 = platform.machine() in ("x86_64", "AMD64")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler to build test libraries")
needs_readelf = pytest.mark.skipif(READELF is None, reason="readelf (binutils) not installed")
needs_isa = pytest.mark.skipif(CC is None or OBJDUMP is None or not X86_64,
                               reason="needs cc, objdump and an x86-64 machine")

# the package these tests measure (the source tree or the installed copy, whichever was imported)
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(size_report.__file__)))  # fastbp/
IMPORT_ROOT = os.path.dirname(PACKAGE_DIR)

C_SOURCE = r"""
static const double table[300] = {1.0, 2.0, 3.0};              /* .rodata */
double weights[100] = {0.5, 0.25};                             /* .data */
double lookup(int i) { return table[i] * weights[i % 100]; }
void axpy(double *y, const double *x, double a, int n) { for (int i = 0; i < n; i++) y[i] += a * x[i]; }
"""

CLONES_SOURCE = r"""
__attribute__((target_clones("avx2", "default")))
static void axpy(double *y, const double *x, double a, int n) { for (int i = 0; i < n; i++) y[i] += a * x[i]; }
void run(double *y, const double *x, int n) { axpy(y, x, 2.0, n); }
"""

MANUAL_DISPATCH_SOURCE = r"""
__attribute__((target("avx2,fma")))
static void axpy_avx2(double *y, const double *x, double a, int n) { for (int i = 0; i < n; i++) y[i] += a * x[i]; }
static void axpy_generic(double *y, const double *x, double a, int n) { for (int i = 0; i < n; i++) y[i] += a * x[i]; }
void run(double *y, const double *x, int n) {
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) axpy_avx2(y, x, 2.0, n);
    else axpy_generic(y, x, 2.0, n);
}
"""


def compile_library(folder, name, flags, source=C_SOURCE):
    c_file = folder / (name.split(".")[0] + "_src.c")
    c_file.write_text(source)
    out = folder / name
    subprocess.run([CC, "-shared", "-fPIC", *flags, str(c_file), "-o", str(out)], check=True,
                   capture_output=True)
    c_file.unlink()
    return out


def readelf_sections(path):
    """{section name: size} as readelf prints them."""
    text = subprocess.run([READELF, "-S", "-W", str(path)], capture_output=True, text=True,
                          check=True).stdout
    sizes = {}
    for match in re.finditer(r"\]\s+(\.\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", text):
        sizes.setdefault(match.group(1), int(match.group(2), 16))
    return sizes


def assert_matches_file(record, path):
    """The record's numbers are those of the file on disk."""
    assert record["bytes"] == os.path.getsize(path)
    assert record["error"] is None
    assert record["loaded"] == sum(record["sections"].values())
    assert record["loaded"] <= record["mapped"] <= record["bytes"]
    if READELF:
        sections = readelf_sections(path)
        for name in size_report.LOADED_SECTIONS:
            assert record["sections"][name] == sections.get(name, 0), name
        assert record["symtab"] == (".symtab" in sections)
        assert record["debug"] == any(name.startswith(".debug") for name in sections)


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    """A folder of test libraries named like extension modules of this Python."""
    if CC is None:
        pytest.skip("no C compiler to build test libraries")
    folder = tmp_path_factory.mktemp("libs")
    compile_library(folder, "release" + EXT, ["-O2", "-s"])
    compile_library(folder, "symbols" + EXT, ["-O2"])
    compile_library(folder, "debug" + EXT, ["-O0", "-g"])
    return folder


def by_name(report):
    return {os.path.basename(record["path"]): record for record in report["files"]}


# --------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------

@needs_cc
def test_folder_numbers_match_the_files(libs):
    report = size_report.measure(str(libs))
    records = by_name(report)
    assert sorted(records) == sorted(p.name for p in libs.iterdir())
    for name, record in records.items():
        assert_matches_file(record, libs / name)
        assert record["sections"][".rodata"] >= 300 * 8 - 64     # the table
        assert record["sections"][".data"] >= 100 * 8             # the weights
    sizes = {name: os.path.getsize(libs / name) for name in records}
    assert report["largest"] == {"path": max(sizes, key=sizes.get), "bytes": max(sizes.values())}
    assert report["total_bytes"] == sum(sizes.values())
    assert report["count"] == 3 and report["vendored_count"] == 0


@needs_cc
def test_debug_and_symbol_table_are_seen(libs):
    records = by_name(size_report.measure(str(libs)))
    release, symbols, debug = (records[n + EXT] for n in ("release", "symbols", "debug"))
    assert not release["debug"] and not release["symtab"] and release["symbols"] == 0
    assert not symbols["debug"] and symbols["symtab"] and symbols["symbols"] > 0
    assert debug["debug"] and debug["symtab"]
    assert ".debug_info" in debug["debug_sections"] and debug["debug_bytes"] > 0
    assert release["bytes"] < symbols["bytes"] < debug["bytes"]


@needs_cc
def test_platform_is_read_from_header_and_name(libs):
    record = by_name(size_report.measure(str(libs)))["release" + EXT]
    assert record["format"] == "ELF" and record["elf_type"] == "DYN"
    assert record["elf_class"] == ("ELF64" if sys.maxsize > 2**32 else "ELF32")
    assert record["machine"] == size_report.host()["machine"]
    assert record["kind"] == "extension" and record["module"] == "release"
    if EXT.startswith(".cpython-"):
        assert record["python_tag"] == f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
        assert record["platform_tag"] == EXT.split("-", 2)[2][:-len(".so")]
    assert record["loadable_here"] is True and record["why_not"] is None


def other_python_name(name):
    """The same module name, tagged for another CPython (3.9, or 3.8 on 3.9)."""
    other = "39" if sys.version_info[:2] != (3, 9) else "38"
    return re.sub(r"\.cpython-\d+", f".cpython-{other}", name), f"cpython-{other}"


@needs_cc
def test_built_for_another_python(libs, tmp_path):
    if not EXT.startswith(".cpython-"):
        pytest.skip("this Python's extension suffix carries no cpython tag")
    name, tag = other_python_name("release" + EXT)
    shutil.copy(libs / ("release" + EXT), tmp_path / name)
    record = size_report.measure(str(tmp_path))["files"][0]
    assert record["python_tag"] == tag
    assert record["loadable_here"] is False and tag in record["why_not"]
    assert_matches_file(record, tmp_path / name)


def set_machine(path, e_machine):
    data = bytearray(path.read_bytes())
    order = "little" if data[5] == 1 else "big"
    data[18:20] = e_machine.to_bytes(2, order)
    path.write_bytes(bytes(data))


@needs_cc
def test_foreign_machine_in_header(libs, tmp_path):
    foreign, name = (183, "aarch64") if size_report.host()["machine"] != "aarch64" else (62, "x86_64")
    path = tmp_path / ("release" + EXT)
    shutil.copy(libs / path.name, path)
    set_machine(path, foreign)
    record = size_report.measure(str(tmp_path))["files"][0]
    assert record["machine"] == name and record["e_machine"] == foreign
    assert record["loadable_here"] is False and name in record["why_not"]
    assert record["bytes"] == os.path.getsize(path)
    text = size_report.format_table(size_report.measure(str(tmp_path)))
    assert name in text and "NO:" in text


@needs_cc
def test_truncated_and_garbage_files_are_reported_not_fatal(libs, tmp_path):
    data = (libs / ("symbols" + EXT)).read_bytes()
    (tmp_path / ("truncated" + EXT)).write_bytes(data[: len(data) // 2])
    (tmp_path / ("garbage" + EXT)).write_bytes(b"this is not a shared library\n" * 10)
    (tmp_path / ("empty" + EXT)).write_bytes(b"")
    report = size_report.measure(str(tmp_path))
    records = by_name(report)
    assert "truncated" in records["truncated" + EXT]["error"]
    assert "not an ELF file" in records["garbage" + EXT]["error"]
    assert records["empty" + EXT]["error"]
    for name, record in records.items():
        assert record["bytes"] == os.path.getsize(tmp_path / name)
        assert record["loadable_here"] is False
    assert report["total_bytes"] == len(data) // 2 + 290
    reasons = size_report.check(report, max_bytes=10**9)
    assert len(reasons) == 3 and all("cannot be read" in reason for reason in reasons)
    size_report.format_table(report)  # prints, does not raise


def test_parse_elf_rejects_short_and_foreign_data():
    with pytest.raises(size_report.ElfError, match="truncated"):
        size_report.parse_elf(data=b"\x7fELF\x02\x01\x01")
    with pytest.raises(size_report.ElfError, match="not an ELF"):
        size_report.parse_elf(data=b"MZ" + b"\0" * 100)
    assert size_report.file_format(b"MZ\x90\0") == "PE"
    assert size_report.file_format(b"\xcf\xfa\xed\xfe") == "Mach-O"


# --------------------------------------------------------------------------------------------
# wheels
# --------------------------------------------------------------------------------------------

@needs_cc
def test_wheel_numbers_are_uncompressed_and_vendored_apart(libs, tmp_path):
    wheel = tmp_path / "fastbp-0.1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    members = {
        "fastbp/__init__.py": b"",
        "fastbp/_c_a" + EXT: (libs / ("debug" + EXT)).read_bytes(),
        "fastbp/_c_b" + EXT: (libs / ("release" + EXT)).read_bytes(),
        "fastbp.libs/libfoo-1a2b3c4d.so.1.0": (libs / ("symbols" + EXT)).read_bytes() * 3,
    }
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    infos = {info.filename: info for info in zipfile.ZipFile(wheel).infolist()}

    report = size_report.measure(str(wheel))
    assert report["source"]["kind"] == "wheel"
    assert report["source"]["tags"] == {"python": "cp311", "abi": "cp311",
                                        "platform": "manylinux_2_17_x86_64"}
    assert report["source"]["sources_inside"] == []
    own = {record["path"]: record for record in report["files"]}
    assert sorted(own) == ["fastbp/_c_a" + EXT, "fastbp/_c_b" + EXT]
    for name, record in own.items():
        assert record["bytes"] == len(members[name]) == infos[name].file_size
        assert record["compressed_bytes"] == infos[name].compress_size
    # the same sections as the file it was made of
    folder = by_name(size_report.measure(str(libs)))
    assert own["fastbp/_c_a" + EXT]["sections"] == folder["debug" + EXT]["sections"]
    assert own["fastbp/_c_a" + EXT]["debug"] and not own["fastbp/_c_b" + EXT]["symtab"]
    # vendored libraries are listed, not counted in the model size or the total
    (vendored,) = report["vendored"]
    assert vendored["path"] == "fastbp.libs/libfoo-1a2b3c4d.so.1.0" and vendored["kind"] == "library"
    assert vendored["bytes"] == len(members[vendored["path"]])
    assert report["vendored_bytes"] == vendored["bytes"] > report["largest"]["bytes"]
    assert report["largest"] == {"path": "fastbp/_c_a" + EXT, "bytes": len(members["fastbp/_c_a" + EXT])}
    assert report["total_bytes"] == len(members["fastbp/_c_a" + EXT]) + len(members["fastbp/_c_b" + EXT])


def test_wheel_with_sources_is_flagged(tmp_path):
    wheel = tmp_path / "fastbp-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fastbp/_c_x.pyx", "def f(): pass\n")
        archive.writestr("fastbp/_c_x.c", "/* generated */\n")
    report = size_report.measure(str(wheel))
    assert report["source"]["sources_inside"] == ["fastbp/_c_x.c", "fastbp/_c_x.pyx"]
    assert report["count"] == 0 and report["largest"] is None
    assert "carries sources" in size_report.format_table(report)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------

def fastbp_size(*args, cwd=None):
    # `python -m` puts the working directory first on sys.path: run where IMPORT_ROOT is what it finds
    env = dict(os.environ, PYTHONPATH=IMPORT_ROOT)
    return subprocess.run([sys.executable, "-m", "fastbp", "size", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd or IMPORT_ROOT)


@needs_cc
def test_command_json_and_table(libs):
    result = fastbp_size(libs, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for record in report["files"]:
        assert_matches_file(record, libs / os.path.basename(record["path"]))
    assert report["checks"] == {"max_bytes": None, "max_total_bytes": None, "check_isa": False,
                                "ok": True, "reasons": []}
    table = fastbp_size(libs)
    assert table.returncode == 0
    for record in report["files"]:
        assert re.search(re.escape(os.path.basename(record["path"])) + r"\s+" + str(record["bytes"])
                         + r"\s+" + str(record["loaded"]) + r"\s", table.stdout)
    assert f"model size (largest compiled file): {report['largest']['bytes']} B" in table.stdout
    assert f"total of 3 compiled files: {report['total_bytes']} B" in table.stdout


@needs_cc
def test_command_budgets(libs):
    report = size_report.measure(str(libs))
    largest, total = report["largest"]["bytes"], report["total_bytes"]
    assert fastbp_size(libs, "--max-bytes", largest).returncode == 0
    assert fastbp_size(libs, "--max-bytes", largest, "--max-total-bytes", total).returncode == 0

    over = fastbp_size(libs, "--max-bytes", largest - 1)
    assert over.returncode == 1
    assert f"is {largest} bytes, over the limit of {largest - 1} bytes (--max-bytes)" in over.stdout
    assert os.path.basename(report["largest"]["path"]) in over.stdout

    over_total = fastbp_size(libs, "--json", "--max-total-bytes", total - 1)
    assert over_total.returncode == 1
    assert json.loads(over_total.stdout)["checks"]["ok"] is False
    assert f"total {total} bytes, over the limit of {total - 1} bytes" in over_total.stderr


def test_command_on_missing_path(tmp_path):
    result = fastbp_size(tmp_path / "nowhere.whl")
    assert result.returncode == 2 and "no such file" in result.stderr


def test_budget_on_nothing_fails(tmp_path):
    result = fastbp_size(tmp_path, "--max-bytes", 100)
    assert result.returncode == 1 and "no compiled files found" in result.stdout
    assert fastbp_size(tmp_path).returncode == 0


def test_size_imports_no_compiled_module():
    code = (
        "import sys, io, contextlib\n"
        "from fastbp import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['size', '--json'])\n"
        "bad = [m for m in sys.modules if m.startswith(('fastbp._c', 'fastbp.kernels._compiled',"
        " 'fastbp._backend', 'fastbp.kernels'))]\n"
        "assert not bad, bad\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=IMPORT_ROOT))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# --------------------------------------------------------------------------------------------
# instruction set: beyond-baseline instructions only behind a runtime CPU check
# --------------------------------------------------------------------------------------------

def test_classify_instruction():
    classify = size_report.classify_instruction
    assert classify("mulsd  %xmm1,%xmm0") is None                       # SSE2: baseline
    assert classify("movapd %xmm0,(%rdi)") is None
    assert classify("rep stos %rax,%es:(%rdi)") is None
    assert classify("tzcnt  %eax,%eax") is None                          # gcc's 'rep bsf'
    assert classify("vmovsd (%rdi),%xmm0") == "avx"
    assert classify("vaddpd %ymm1,%ymm2,%ymm0") == "avx"
    assert classify("vpaddd %ymm1,%ymm2,%ymm0") == "avx2"
    assert classify("vpbroadcastq %xmm0,%ymm0") == "avx2"
    assert classify("vfmadd231pd (%rsi,%rax,1),%ymm1,%ymm0") == "fma"
    assert classify("vaddpd %zmm1,%zmm2,%zmm0") == "avx512"
    assert classify("vmovupd %xmm17,(%rdi)") == "avx512"
    assert classify("kmovw  %k1,%eax") == "avx512"
    assert classify("roundsd $0x9,%xmm1,%xmm0") == "sse4.1"
    assert classify("pshufb %xmm1,%xmm0") == "ssse3"
    assert classify("popcnt %rdi,%rax") == "popcnt"
    assert classify("shlx   %rax,%rdx,%rcx") == "bmi2"


@needs_isa
def test_isa_baseline_build_passes(libs):
    record = by_name(size_report.measure(str(libs), isa=True))["symbols" + EXT]
    assert record["isa"]["verdict"] == "baseline"
    assert record["isa"]["features"] == {}


@needs_isa
def test_isa_march_build_is_flagged(tmp_path):
    compile_library(tmp_path, "native" + EXT, ["-O3", "-mavx2", "-mfma"])
    compile_library(tmp_path, "native_stripped" + EXT, ["-O3", "-mavx2", "-mfma", "-s"])
    report = size_report.measure(str(tmp_path), isa=True)
    for record in report["files"]:
        assert record["isa"]["verdict"] == "UNGUARDED", record["path"]
        assert "fma" in record["isa"]["features"]
    assert "axpy" in by_name(report)["native" + EXT]["isa"]["unguarded"]
    reasons = size_report.check(report, check_isa=True)
    assert len(reasons) == 2 and all("outside any runtime CPU check" in r for r in reasons)
    result = fastbp_size(tmp_path, "--check-isa")
    assert result.returncode == 1 and "outside any runtime CPU check" in result.stdout


@needs_isa
def test_isa_target_clones_and_manual_dispatch_pass(tmp_path):
    compile_library(tmp_path, "clones" + EXT, ["-O3"], CLONES_SOURCE)
    compile_library(tmp_path, "clones_stripped" + EXT, ["-O3", "-s"], CLONES_SOURCE)
    compile_library(tmp_path, "manual" + EXT, ["-O3"], MANUAL_DISPATCH_SOURCE)
    obj = tmp_path / "clones.o"
    (tmp_path / "clones.c").write_text(CLONES_SOURCE)
    subprocess.run([CC, "-O3", "-fPIC", "-c", str(tmp_path / "clones.c"), "-o", str(obj)], check=True)
    report = size_report.merge([size_report.measure(str(tmp_path), isa=True),
                                size_report.measure(str(obj), isa=True)])
    records = by_name(report)
    for name in ("clones" + EXT, "manual" + EXT, "clones.o"):
        scan = records[name]["isa"]
        assert scan["verdict"] == "dispatched", (name, scan)
        assert scan["features"] and scan["unguarded"] == []
        assert all(size_report.VARIANT_RE.search(f) for f in scan["functions"]), scan["functions"]
    stripped = records["clones_stripped" + EXT]
    assert not stripped["symtab"] and stripped["ifunc"]
    assert stripped["isa"]["verdict"] == "dispatched" and "ifunc" in stripped["isa"]["reason"]
    assert records["clones.o"]["kind"] == "object" and records["clones.o"]["loadable_here"] is None
    assert size_report.check(report, check_isa=True) == []


# --------------------------------------------------------------------------------------------
# the installed package
# --------------------------------------------------------------------------------------------

def installed_extensions():
    return sorted(os.path.relpath(os.path.join(root, name), PACKAGE_DIR)
                  for root, _, names in os.walk(PACKAGE_DIR) for name in names if name.endswith(EXT))


def test_installed_package_numbers_match_the_files():
    report = size_report.measure()
    assert report["source"] == {"kind": "installed",
                                "path": os.path.realpath(os.path.dirname(
                                    importlib.util.find_spec("fastbp").origin))}
    site = os.path.dirname(report["source"]["path"])
    for record in report["files"] + report["vendored"]:
        assert_matches_file(record, os.path.join(site, record["path"]))
    own = report["files"]
    assert report["total_bytes"] == sum(r["bytes"] for r in own)
    if not own:
        pytest.skip(f"no compiled files in {report['source']['path']} (kernels not built)")
    assert report["largest"]["bytes"] == max(r["bytes"] for r in own)
    for record in own:
        if record["path"].endswith(EXT):
            assert record["loadable_here"], record
    result = fastbp_size("--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == json.loads(json.dumps(own))


@pytest.mark.skipif(os.environ.get("FASTBP_EXPECT_RELEASE") != "1",
                    reason="set FASTBP_EXPECT_RELEASE=1 where a release build is installed")
def test_installed_release_build_is_stripped():
    report = size_report.measure()
    assert report["files"], "no compiled files in the installed package"
    for record in report["files"]:
        assert not record["debug"] and not record["symtab"], record["path"]


# --------------------------------------------------------------------------------------------
# foreign .so files in an installed copy: fastbp falls back to NumPy and says so
# --------------------------------------------------------------------------------------------

PROBE = ("import warnings, os\n"
         "with warnings.catch_warnings(record=True) as caught:\n"
         "    warnings.simplefilter('always')\n"
         "    import fastbp\n"
         "    backend = fastbp.backend()\n"
         "print(os.path.realpath(fastbp.__file__))\n"
         "print(backend)\n"
         "for w in caught: print('WARNING', w.category.__name__, w.message)\n")


def run_probe(site):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FASTBP_"))}
    env.update(PYTHONPATH=str(site), FASTBP_BACKEND="auto", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            env=env, cwd=str(site))
    assert result.returncode == 0, result.stderr
    where, backend, *warnings = result.stdout.splitlines()
    assert where.startswith(str(site)), where
    return backend, warnings


@pytest.fixture
def installed_copy(tmp_path):
    """A copy of the installed package (and its vendored libraries) in tmp_path/site, checked
    to run on the compiled backend before a test breaks it."""
    if not installed_extensions():
        pytest.skip(f"no compiled modules in {PACKAGE_DIR}")
    site = tmp_path / "site"
    shutil.copytree(PACKAGE_DIR, site / "fastbp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyx", "*.c", "*.o"))
    libs = os.path.join(IMPORT_ROOT, "fastbp.libs")
    if os.path.isdir(libs):
        shutil.copytree(libs, site / "fastbp.libs")
    backend, warnings = run_probe(site)
    if backend != "compiled":
        pytest.skip(f"the installed package does not run compiled ({warnings})")
    return site


def assert_falls_back(site):
    backend, warnings = run_probe(site)
    assert backend == "numpy"
    assert any(w.startswith("WARNING RuntimeWarning") and "compiled kernels unavailable" in w
               for w in warnings), warnings


def test_built_for_another_python_falls_back(installed_copy):
    package = installed_copy / "fastbp"
    renamed = []
    for name in installed_extensions():
        new_name, tag = other_python_name(name)
        (package / name).rename(package / new_name)
        renamed.append(new_name)
    assert_falls_back(installed_copy)
    report = size_report.measure(str(package))
    for record in report["files"]:
        if record["path"] in renamed:
            assert record["python_tag"] == tag and record["loadable_here"] is False


def test_foreign_machine_falls_back(installed_copy):
    package = installed_copy / "fastbp"
    foreign = 183 if size_report.host()["machine"] != "aarch64" else 62
    for name in installed_extensions():
        set_machine(package / name, foreign)
    assert_falls_back(installed_copy)
    report = size_report.measure(str(package))
    for record in report["files"]:
        if record["path"] in installed_extensions():
            assert record["e_machine"] == foreign and record["loadable_here"] is False
