"""``fastbp size``: what fastbp's compiled files weigh, and what they were built for.

It measures the installed package (the ``fastbp`` that ``import fastbp`` would find; the
default), a folder, a ``.whl`` file, or single compiled files.  For each compiled file it reports:

* ``bytes``: the size on disk (for a wheel member: uncompressed);
* the loaded sections ``.text``, ``.rodata``, ``.data`` and their sum ``loaded``;
* whether debug sections (``.debug_*``) or a symbol table (``.symtab``) remain;
* the platform it was built for: ELF class and machine from the header, the newest glibc
  symbol version it needs, and the Python tag from the file name (``cpython-311``, ``abi3``);
* whether this interpreter could load it (``here``), and if not, why.

Everything is read from the files with ``struct``; nothing is imported (a foreign or broken
``.so`` can crash the interpreter on import).  This module uses the standard library only, and
fastbp._platform._elf: the ELF parser it shares with the check that a compiled module is whole before
fastbp imports it.

Then the largest file (the "model size"), the total of the package's compiled files, and vendored
libraries (``fastbp.libs/``, as put there by auditwheel) counted apart.

``--max-bytes N`` / ``--max-total-bytes N`` exit with status 1, naming the reason, when the
largest file / the total is over N.  ``--isa`` disassembles each x86-64 file (with ``objdump``)
and reports instructions beyond the x86-64 baseline (SSE2); ``--check-isa`` fails when such
instructions are not behind a runtime CPU check (see ``isa_scan``).
"""
import argparse
import importlib.machinery
import importlib.util
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

from fastbp._platform._elf import SHT_NOBITS, ElfError, Source, cstr as _cstr, read_headers

__all__ = ["add_arguments", "run", "main", "measure", "parse_elf", "isa_scan", "ElfError"]

LOADED_SECTIONS = (".text", ".rodata", ".data")

# e_machine -> name (the common ones; anything else prints as its number)
MACHINES = {
    3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390x", 40: "arm", 43: "sparcv9",
    50: "ia64", 62: "x86_64", 183: "aarch64", 243: "riscv", 258: "loongarch",
}
ELF_TYPES = {0: "NONE", 1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}

SHT_SYMTAB, SHT_RELA, SHT_DYNSYM = 2, 4, 11
SHT_GNU_VERNEED = 0x6FFFFFFE
SHF_ALLOC = 0x2
STT_GNU_IFUNC = 10
R_X86_64_IRELATIVE = 37
R_386_IRELATIVE = 42

# what counts as a compiled file when walking a folder or a wheel
_SHARED_RE = re.compile(r"\.(so|pyd|dylib)(\.\d+)*$")
# "<module>.<tag>.so" -> tag; the tag says which interpreter the file was built for
_TAG_RE = re.compile(r"^(?P<module>[^.]+)\.(?P<tag>[^/]+)\.(so|pyd)$")
_CPYTHON_TAG_RE = re.compile(r"^(?P<python>cpython-\d+[a-z]*|pypy\d+-pp\d+|cp\d+)-(?P<platform>.+)$")
_VENDOR_DIR_RE = re.compile(r"(^|/)([^/]*\.libs|\.dylibs)/")
_WHEEL_RE = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?-(?P<python>[^-]+)-(?P<abi>[^-]+)"
    r"-(?P<platform>[^-]+)\.whl$")


def file_format(head):
    """'ELF', 'PE', 'Mach-O' or 'unknown' from a file's first bytes."""
    if head[:4] == b"\x7fELF":
        return "ELF"
    if head[:2] == b"MZ":
        return "PE"
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf",
                    b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"):
        return "Mach-O"
    return "unknown"


def parse_elf(path=None, data=None):
    """Read an ELF file's header and section headers (and a few small sections).

    Give ``path`` or ``data`` (bytes).  Returns a dict (see ``_elf_record``) or raises ElfError
    for a file that is not ELF, is truncated or is otherwise inconsistent (see fastbp._platform._elf).
    """
    with Source(path, data) as src:
        h = read_headers(src)

        def content(section):
            return src.read(section["offset"], section["size"], f"section {section['name']}")

        return _elf_record(h["sections"], content, h["end"], h["is64"], h["elf_class"],
                           h["byte_order"], h["e_type"], h["e_machine"])


def _elf_record(sections, content, end, is64, elf_class, byte_order, e_type, e_machine):
    by_name = {}
    for section in sections:
        by_name.setdefault(section["name"], section)
    loaded = {name: (by_name[name]["size"] if name in by_name else 0) for name in LOADED_SECTIONS}
    debug = [s for s in sections if s["name"].startswith((".debug", ".zdebug", ".stab"))]
    symtabs = [s for s in sections if s["type"] == SHT_SYMTAB]
    symbol_size = 24 if is64 else 16
    record = {
        "format": "ELF",
        "elf_class": "ELF64" if is64 else "ELF32",
        "byte_order": "little" if byte_order == 1 else "big",
        "machine": MACHINES.get(e_machine, f"machine-{e_machine}"),
        "e_machine": e_machine,
        "elf_type": ELF_TYPES.get(e_type, str(e_type)),
        "sections": loaded,
        "loaded": sum(loaded.values()),
        # everything the loader maps from the file (code, constants, data, relocations, ...)
        "mapped": sum(s["size"] for s in sections
                      if s["flags"] & SHF_ALLOC and s["type"] != SHT_NOBITS),
        "debug": bool(debug),
        "debug_sections": [s["name"] for s in debug],
        "debug_bytes": sum(s["size"] for s in debug),
        "symtab": bool(symtabs),
        "symbols": sum(s["size"] // (s["entsize"] or symbol_size) for s in symtabs),
        "needed": [],
        "runpath": [],
        "glibc": None,
        "ifunc": False,
    }
    # shared libraries it needs (DT_NEEDED) and the newest GLIBC_x.y symbol version it asks for
    for section in sections:
        if section["name"] == ".dynamic" and section["link"] < len(sections):
            strings = content(sections[section["link"]])
            fmt = end + ("qQ" if is64 else "iI")
            step = struct.calcsize(fmt)
            raw = content(section)
            for offset in range(0, len(raw) - step + 1, step):
                tag, value = struct.unpack_from(fmt, raw, offset)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    record["needed"].append(_cstr(strings, value))
                elif tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                    record["runpath"] += _cstr(strings, value).split(":")
        elif section["type"] == SHT_GNU_VERNEED and section["link"] < len(sections):
            record["glibc"] = _newest_glibc(content(section), content(sections[section["link"]]),
                                            end, section["info"])
    # runtime dispatch evidence that survives stripping: IRELATIVE relocations (local ifuncs,
    # as gcc's target_clones makes them) or an IFUNC symbol in a symbol table
    irelative = R_X86_64_IRELATIVE if e_machine == 62 else R_386_IRELATIVE if e_machine == 3 else None
    for section in sections:
        if section["type"] == SHT_RELA and irelative is not None and e_type != 1:
            fmt = end + ("QQq" if is64 else "IIi")
            step = struct.calcsize(fmt)
            raw = content(section)
            for offset in range(0, len(raw) - step + 1, step):
                _where, info, _addend = struct.unpack_from(fmt, raw, offset)
                if (info & 0xFFFFFFFF if is64 else info & 0xFF) == irelative:
                    record["ifunc"] = True
                    break
        elif section["type"] in (SHT_SYMTAB, SHT_DYNSYM) and not record["ifunc"]:
            raw = content(section)
            info_at = 4 if is64 else 12
            for offset in range(0, len(raw) - symbol_size + 1, symbol_size):
                if raw[offset + info_at] & 0xF == STT_GNU_IFUNC:
                    record["ifunc"] = True
                    break
    return record


def _newest_glibc(raw, strings, end, count):
    newest = None
    offset = 0
    for _ in range(count or 1000):
        if offset + 16 > len(raw):
            break
        _version, aux_count, _file, aux, following = struct.unpack_from(end + "HHIII", raw, offset)
        aux_offset = offset + aux
        for _ in range(aux_count):
            if aux_offset + 16 > len(raw):
                break
            _hash, _flags, _other, name, aux_next = struct.unpack_from(end + "IHHII", raw, aux_offset)
            match = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)*)", _cstr(strings, name))
            if match:
                version = tuple(int(part) for part in match.group(1).split("."))
                newest = max(newest, version) if newest else version
            if not aux_next:
                break
            aux_offset += aux_next
        if not following:
            break
        offset += following
    return ".".join(map(str, newest)) if newest else None


# --------------------------------------------------------------------------------------------
# this interpreter, for the 'here' column
# --------------------------------------------------------------------------------------------

_HOST = None


def host():
    """What this interpreter can load: ELF class/machine/byte order (read from its own
    executable), extension suffixes and glibc version."""
    global _HOST
    if _HOST is None:
        info = {"ext_suffixes": list(importlib.machinery.EXTENSION_SUFFIXES),
                "python": f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
                if sys.implementation.name == "cpython" else sys.implementation.name,
                "machine": platform.machine(), "elf_class": None, "byte_order": None,
                "glibc": None}
        try:
            exe = parse_elf(os.path.realpath(sys.executable))
            info.update(elf_class=exe["elf_class"], byte_order=exe["byte_order"],
                        machine=exe["machine"])
        except (OSError, ElfError):
            pass
        libc, version = platform.libc_ver()
        if libc == "glibc" and version:
            info["glibc"] = version
        _HOST = info
    return _HOST


def _version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text))


def _python_tag(name):
    """(module, python_tag, platform_tag) from a file name like
    ``_c_linear.cpython-311-x86_64-linux-gnu.so``; tags are None where the name has none."""
    match = _TAG_RE.match(name)
    if not match:
        return name.split(".", 1)[0], None, None
    tag = match.group("tag")
    if tag == "abi3":
        return match.group("module"), "abi3", None
    tagged = _CPYTHON_TAG_RE.match(tag)
    if tagged:
        return match.group("module"), tagged.group("python"), tagged.group("platform")
    return match.group("module"), tag, None


def _loadable_here(record):
    """Return (True, None) or (False, reason), judged from the file alone."""
    if record.get("error"):
        return False, record["error"]
    here = host()
    if record["format"] != "ELF":
        return False, f"{record['format']} file"
    if here["elf_class"] and record["elf_class"] != here["elf_class"]:
        return False, f"{record['elf_class']}, this Python is {here['elf_class']}"
    if here["machine"] and record["machine"] != here["machine"]:
        return False, f"built for {record['machine']}, this machine is {here['machine']}"
    if here["byte_order"] and record["byte_order"] != here["byte_order"]:
        return False, f"{record['byte_order']}-endian, this machine is {here['byte_order']}-endian"
    if record["kind"] == "extension":
        name = os.path.basename(record["path"])
        suffix = name[len(record["module"]):]   # the import system tries exactly these suffixes
        if suffix not in here["ext_suffixes"]:
            return False, (f"built for {record['python_tag']}, this Python loads "
                           f"{', '.join(here['ext_suffixes'])}")
    if record["glibc"] and here["glibc"] and \
            _version_tuple(record["glibc"]) > _version_tuple(here["glibc"]):
        return False, f"needs glibc {record['glibc']}, this system has {here['glibc']}"
    return True, None


# --------------------------------------------------------------------------------------------
# instruction-set scan (x86-64): instructions beyond the baseline must sit behind a CPU check
# --------------------------------------------------------------------------------------------

_SSE3 = {"addsubps", "addsubpd", "haddps", "haddpd", "hsubps", "hsubpd", "lddqu", "movddup",
         "movshdup", "movsldup", "fisttp", "fisttps", "fisttpl", "fisttpll"}
_SSSE3 = {"pshufb", "phaddw", "phaddd", "phaddsw", "phsubw", "phsubd", "phsubsw", "pmaddubsw",
          "pmulhrsw", "psignb", "psignw", "psignd", "pabsb", "pabsw", "pabsd", "palignr"}
_SSE41 = {"blendps", "blendpd", "blendvps", "blendvpd", "pblendvb", "pblendw", "dpps", "dppd",
          "extractps", "insertps", "movntdqa", "mpsadbw", "packusdw", "pcmpeqq", "pextrb",
          "pextrd", "pextrq", "phminposuw", "pinsrb", "pinsrd", "pinsrq", "pmaxsb", "pmaxsd",
          "pmaxud", "pmaxuw", "pminsb", "pminsd", "pminud", "pminuw", "pmuldq", "pmulld", "ptest",
          "roundps", "roundpd", "roundss", "roundsd", "pmovsxbw", "pmovsxbd", "pmovsxbq",
          "pmovsxwd", "pmovsxwq", "pmovsxdq", "pmovzxbw", "pmovzxbd", "pmovzxbq", "pmovzxwd",
          "pmovzxwq", "pmovzxdq"}
_SSE42 = {"pcmpestri", "pcmpestrm", "pcmpistri", "pcmpistrm", "pcmpgtq", "crc32", "crc32b",
          "crc32w", "crc32l", "crc32q"}
_BMI = {"andn", "bextr", "blsi", "blsmsk", "blsr"}
_BMI2 = {"bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx", "shrx"}
_OTHER = {"popcnt": "popcnt", "lzcnt": "lzcnt", "movbe": "movbe"}
# 'tzcnt' is left out on purpose: gcc's generic tuning emits 'rep bsf', which objdump shows as
# tzcnt and which runs as bsf on older CPUs.
_AVX2_ONLY = ("vpbroadcast", "vbroadcasti128", "vperm2i128", "vinserti128", "vextracti128",
              "vpermd", "vpermq", "vpermps", "vpermpd", "vpsllv", "vpsrlv", "vpsrav", "vpmaskmov",
              "vpblendd", "vgather", "vpgather")
_AVX512_ONLY = ("vpternlog", "vpermt2", "vpermi2", "vcompress", "vexpand", "vpconflict",
                "vplzcnt", "vrcp14", "vrsqrt14", "vgetexp", "vgetmant", "vscalef", "vfixupimm",
                "vrndscale", "vreduce", "vrange", "vpmovm2", "vpmov", "kmov", "kand", "kor",
                "kxor", "knot", "kortest", "kshift", "kunpck", "ktest", "kadd")
_VMX = {"verr", "verw", "vmcall", "vmlaunch", "vmresume", "vmxoff", "vmxon", "vmread", "vmwrite",
        "vmptrld", "vmptrst", "vmclear", "vmfunc", "vmrun", "vmload", "vmsave", "vmmcall"}
_PREFIXES = {"rep", "repz", "repe", "repnz", "repne", "lock", "notrack", "bnd", "data16", "addr32",
             "cs", "ds", "es", "fs", "gs", "ss", "{vex}", "{vex3}", "{evex}", "xacquire",
             "xrelease", "rex", "rex.w"}
_EVEX_REG_RE = re.compile(r"%zmm|%[xy]mm(1[6-9]|2\d|3[01])\b|\{%k[0-7]\}|%k[0-7]\b")
# a clone or dispatch variant: gcc target_clones names (foo.avx2, foo.arch_x86_64_v3,
# foo.fma), or a hand-named variant (foo_avx2, foo_fma, foo_avx512f)
VARIANT_RE = re.compile(
    r"(\.(avx|fma|arch_|sse[34]|ssse3|popcnt|bmi|f16c|x86.64.v\d)|"
    r"[._](avx\d*|avx512\w*|fma\d?|sse4\w*|ssse3|x86.64.v\d)(\b|_|$))", re.IGNORECASE)
_FUNC_RE = re.compile(r"^[0-9a-f]+ <(?P<name>.+)>:$")
_INSN_RE = re.compile(r"^\s*[0-9a-f]+:\s+(?P<text>.+)$")


def classify_instruction(text):
    """The extension an x86-64 instruction (objdump AT&T syntax, no raw bytes) needs beyond
    the baseline (SSE2), or None."""
    words = text.split()
    while words and words[0] in _PREFIXES:
        words = words[1:]
    if not words:
        return None
    mnemonic, operands = words[0], " ".join(words[1:]).split("#")[0]
    if mnemonic in _VMX:
        return None
    if mnemonic.startswith("v") or mnemonic.startswith("k"):
        if _EVEX_REG_RE.search(operands) or mnemonic.startswith(_AVX512_ONLY):
            return "avx512"
        if mnemonic.startswith("k"):
            return None
        if mnemonic.startswith(("vfmadd", "vfmsub", "vfnmadd", "vfnmsub")):
            return "fma"
        if mnemonic.startswith(("vcvtph2ps", "vcvtps2ph")):
            return "f16c"
        if mnemonic.startswith(_AVX2_ONLY) or (mnemonic.startswith("vp") and "%ymm" in operands):
            return "avx2"
        return "avx"
    if mnemonic in _SSE3:
        return "sse3"
    if mnemonic in _SSSE3:
        return "ssse3"
    if mnemonic in _SSE41:
        return "sse4.1"
    if mnemonic in _SSE42:
        return "sse4.2"
    if mnemonic in _BMI:
        return "bmi"
    if mnemonic in _BMI2:
        return "bmi2"
    return _OTHER.get(mnemonic)


def isa_scan(path, record=None):
    """Disassemble an x86-64 ELF file with objdump and judge whether it runs on any x86-64 CPU.

    Returns a dict: ``verdict`` is 'baseline' (SSE2 only), 'dispatched' (extra instructions,
    but only in clone/variant functions; with a symbol table this is checked per function,
    for a stripped file the file must contain an ifunc dispatcher, as gcc's target_clones
    makes), 'UNGUARDED' (extra instructions outside any runtime check) or 'not checked'.
    """
    record = record or parse_elf(path)
    if record["machine"] != "x86_64":
        return {"verdict": "not checked", "reason": f"{record['machine']}: x86-64 only"}
    objdump = shutil.which("objdump")
    if objdump is None:
        return {"verdict": "not checked", "reason": "objdump not found"}
    result = subprocess.run([objdump, "-d", "-w", "--no-show-raw-insn", path],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return {"verdict": "not checked", "reason": f"objdump failed: {result.stderr.strip()}"}
    counts, functions, current = {}, {}, "?"
    for line in result.stdout.splitlines():
        header = _FUNC_RE.match(line)
        if header:
            current = header.group("name")
            continue
        insn = _INSN_RE.match(line)
        if not insn:
            continue
        feature = classify_instruction(insn.group("text"))
        if feature:
            counts[feature] = counts.get(feature, 0) + 1
            functions.setdefault(current, set()).add(feature)
    scan = {"features": dict(sorted(counts.items())), "instructions": sum(counts.values()),
            "functions": sorted(functions), "unguarded": []}
    if not counts:
        scan["verdict"] = "baseline"
    elif record["symtab"]:
        scan["unguarded"] = sorted(name for name in functions if not VARIANT_RE.search(name))
        scan["verdict"] = "UNGUARDED" if scan["unguarded"] else "dispatched"
    elif record["ifunc"]:
        scan["verdict"] = "dispatched"
        scan["reason"] = "stripped: ifunc dispatcher present, functions not checked one by one"
    else:
        scan["verdict"] = "UNGUARDED"
        scan["unguarded"] = scan["functions"]
        scan["reason"] = "stripped and no ifunc dispatcher"
    return scan


# --------------------------------------------------------------------------------------------
# finding and measuring files
# --------------------------------------------------------------------------------------------

def _is_compiled_name(name):
    return bool(_SHARED_RE.search(name))


def _kind(relpath):
    name = os.path.basename(relpath)
    if name.endswith(".o"):
        return "object"
    if _VENDOR_DIR_RE.search("/" + relpath.replace(os.sep, "/")) or \
            (not _TAG_RE.match(name) and not name.endswith((".so", ".pyd"))):
        return "library"
    return "extension"


def _measure_one(relpath, size, path=None, data=None, isa=False, extra=None):
    relpath = relpath.replace(os.sep, "/")
    kind = _kind(relpath)
    vendored = bool(_VENDOR_DIR_RE.search("/" + relpath))
    module, python_tag, platform_tag = _python_tag(os.path.basename(relpath))
    record = {"path": relpath, "bytes": size, "kind": kind, "vendored": vendored,
              "module": module if kind == "extension" else None,
              "python_tag": python_tag if kind == "extension" else None,
              "platform_tag": platform_tag if kind == "extension" else None,
              "error": None}
    record.update(extra or {})
    try:
        if data is not None:
            head = data[:4]
        else:
            with open(path, "rb") as handle:
                head = handle.read(4)
        fmt = file_format(head)
        if fmt != "ELF":
            record.update(format=fmt, error=f"not an ELF file ({fmt})" if fmt == "unknown" else None)
        else:
            record.update(parse_elf(path=path, data=data))
    except (ElfError, OSError, struct.error) as error:
        record.setdefault("format", "ELF")
        record["error"] = str(error)
    record["loadable_here"], record["why_not"] = (
        _loadable_here(record) if record["kind"] != "object" else (None, None))
    if isa and record.get("format") == "ELF" and not record["error"]:
        if path is None:
            with tempfile.TemporaryDirectory() as tmp:
                tmp_path = os.path.join(tmp, os.path.basename(relpath))
                with open(tmp_path, "wb") as handle:
                    handle.write(data)
                record["isa"] = isa_scan(tmp_path, record)
        else:
            record["isa"] = isa_scan(path, record)
    return record


def _walk(folder):
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if _is_compiled_name(name):
                yield os.path.join(root, name)


def installed_package():
    """(package folder, [vendored folders]) of the fastbp that ``import fastbp`` finds,
    located without executing it."""
    spec = importlib.util.find_spec("fastbp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fastbp is not installed")
    package = os.path.realpath(list(spec.submodule_search_locations)[0])
    parent = os.path.dirname(package)
    vendored = [os.path.join(parent, "fastbp.libs")]
    return package, [folder for folder in vendored if os.path.isdir(folder)]


def measure(target=None, isa=False):
    """Measure the compiled files of ``target``: None (the installed package), a folder, a
    ``.whl`` or a single file.  Returns the report as a dict (what ``--json`` prints)."""
    records = []
    if target is None:
        package, vendored_dirs = installed_package()
        source = {"kind": "installed", "path": package}
        base = os.path.dirname(package)
        for folder in [package, *vendored_dirs]:
            for path in _walk(folder):
                records.append(_measure_one(os.path.relpath(path, base), os.path.getsize(path),
                                            path=path, isa=isa))
    elif os.path.isdir(target):
        source = {"kind": "folder", "path": os.path.abspath(target)}
        for path in _walk(target):
            records.append(_measure_one(os.path.relpath(path, target), os.path.getsize(path),
                                        path=path, isa=isa))
    elif target.endswith(".whl") and zipfile.is_zipfile(target):
        source = {"kind": "wheel", "path": os.path.abspath(target),
                  "wheel_bytes": os.path.getsize(target)}
        match = _WHEEL_RE.match(os.path.basename(target))
        if match:
            source["tags"] = {key: match.group(key) for key in ("python", "abi", "platform")}
        with zipfile.ZipFile(target) as wheel:
            names = wheel.namelist()
            source["sources_inside"] = sorted(n for n in names if n.endswith((".pyx", ".c", ".cpp")))
            for info in wheel.infolist():
                if info.is_dir() or not _is_compiled_name(info.filename):
                    continue
                records.append(_measure_one(info.filename, info.file_size,
                                            data=wheel.read(info), isa=isa,
                                            extra={"compressed_bytes": info.compress_size}))
    elif os.path.isfile(target):
        source = {"kind": "file", "path": os.path.abspath(target)}
        records.append(_measure_one(os.path.basename(target), os.path.getsize(target),
                                    path=target, isa=isa))
    else:
        raise FileNotFoundError(f"no such file, folder or wheel: {target}")

    own = [r for r in records if not r["vendored"]]
    vendored = [r for r in records if r["vendored"]]
    largest = max(own, key=lambda r: r["bytes"], default=None)
    here = host()
    return {
        "source": source,
        "this_python": {key: here[key] for key in
                        ("python", "machine", "elf_class", "glibc", "ext_suffixes")},
        "files": own,
        "vendored": vendored,
        "count": len(own),
        "largest": {"path": largest["path"], "bytes": largest["bytes"]} if largest else None,
        "total_bytes": sum(r["bytes"] for r in own),
        "vendored_count": len(vendored),
        "vendored_bytes": sum(r["bytes"] for r in vendored),
    }


def merge(reports):
    """One report over several targets (each file's path gets its target's name in front)."""
    if len(reports) == 1:
        return reports[0]
    files, vendored = [], []
    for report in reports:
        files += report["files"]
        vendored += report["vendored"]
    largest = max(files, key=lambda r: r["bytes"], default=None)
    return {"source": {"kind": "several", "paths": [r["source"] for r in reports]},
            "this_python": reports[0]["this_python"], "files": files, "vendored": vendored,
            "count": len(files),
            "largest": {"path": largest["path"], "bytes": largest["bytes"]} if largest else None,
            "total_bytes": sum(r["bytes"] for r in files),
            "vendored_count": len(vendored),
            "vendored_bytes": sum(r["bytes"] for r in vendored)}


def check(report, max_bytes=None, max_total_bytes=None, check_isa=False):
    """The reasons the report fails the requested checks (an empty list when it passes)."""
    reasons = []
    if max_bytes is None and max_total_bytes is None and not check_isa:
        return reasons
    if not report["files"]:
        reasons.append("no compiled files found: nothing to check")
    for record in report["files"]:
        if record["error"]:
            reasons.append(f"{record['path']}: cannot be read as a compiled file ({record['error']})")
    largest = report["largest"]
    if max_bytes is not None and largest and largest["bytes"] > max_bytes:
        reasons.append(f"largest compiled file {largest['path']} is {largest['bytes']} bytes, "
                       f"over the limit of {max_bytes} bytes (--max-bytes)")
    if max_total_bytes is not None and report["total_bytes"] > max_total_bytes:
        reasons.append(f"compiled files total {report['total_bytes']} bytes, over the limit of "
                       f"{max_total_bytes} bytes (--max-total-bytes)")
    if check_isa:
        for record in report["files"] + report["vendored"]:
            scan = record.get("isa") or {}
            if scan.get("verdict") == "UNGUARDED":
                where = ", ".join(scan["unguarded"][:5]) + (" ..." if len(scan["unguarded"]) > 5 else "")
                reasons.append(f"{record['path']}: {', '.join(scan['features'])} instructions "
                               f"outside any runtime CPU check (in {where})")
            elif scan.get("reason") == "objdump not found":
                reasons.append(f"{record['path']}: instruction set not checked: objdump not found")
    return reasons


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

def _human(n):
    if n < 1024:
        return f"{n} B"
    return f"{n} B ({n / 1024:.1f} KiB)"


def _built_for(record):
    if record.get("format") != "ELF" or record.get("elf_type") is None:
        return record.get("format", "?")
    parts = [record["elf_class"], record["machine"]]
    if record["byte_order"] == "big":
        parts.append("big-endian")
    if record["kind"] == "extension":
        parts.append(record["python_tag"] or "untagged")
    if record["glibc"]:
        parts.append(f"glibc>={record['glibc']}")
    return " ".join(parts)


def _row(record, show_isa):
    ok = record.get("error") is None and record.get("elf_type") is not None
    sections = record.get("sections", {})
    here = ("-" if record["loadable_here"] is None else "yes" if record["loadable_here"] else
            "NO (unreadable)" if record.get("error") else f"NO: {record['why_not']}")
    row = [record["path"], str(record["bytes"]),
           str(record["loaded"]) if ok else "-",
           *[str(sections.get(name, 0)) if ok else "-" for name in LOADED_SECTIONS],
           ("yes" if record["debug"] else "no") if ok else "-",
           ("yes" if record["symtab"] else "no") if ok else "-",
           _built_for(record) if ok else f"ERROR: {record['error']}"]
    if show_isa:
        scan = record.get("isa")
        if not scan:
            row.append("-")
        else:
            features = ",".join(scan.get("features", {}))
            row.append(scan["verdict"] + (f" ({features})" if features else ""))
    row.append(here)
    return row


def format_table(report, reasons=(), show_isa=False):
    source = report["source"]
    lines = []
    if source["kind"] == "installed":
        lines.append(f"fastbp size: installed package {source['path']}")
    elif source["kind"] == "wheel":
        tags = source.get("tags")
        lines.append(f"fastbp size: wheel {source['path']} ({source['wheel_bytes']} bytes"
                     + (f"; tags {tags['python']}-{tags['abi']}-{tags['platform']}" if tags else "")
                     + "); bytes are uncompressed")
        if source.get("sources_inside"):
            lines.append(f"  note: the wheel carries sources: {', '.join(source['sources_inside'])}")
    elif source["kind"] == "several":
        lines.append("fastbp size: " + ", ".join(s["path"] for s in source["paths"]))
    else:
        lines.append(f"fastbp size: {source['kind']} {source['path']}")
    here = report["this_python"]
    lines.append(f"this Python: {here['python']} {here['elf_class'] or ''} {here['machine']}"
                 + (f" glibc {here['glibc']}" if here["glibc"] else ""))
    header = ["file", "bytes", "loaded", ".text", ".rodata", ".data", "debug", "symtab",
              "built for", *(["isa"] if show_isa else []), "loads here"]
    rows = [_row(r, show_isa) for r in report["files"] + report["vendored"]]
    if rows:
        widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
        numeric = {1, 2, 3, 4, 5}

        def fmt(row):
            return "  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                             for i, cell in enumerate(row)).rstrip()

        lines += ["", fmt(header), fmt(["-" * w for w in widths])]
        lines += [fmt(_row(r, show_isa)) for r in report["files"]]
        if report["vendored"]:
            lines.append("vendored libraries (not counted in the model size or total):")
            lines += [fmt(_row(r, show_isa)) for r in report["vendored"]]
        lines.append("")
    else:
        lines += ["", "no compiled files found", ""]
    largest = report["largest"]
    if largest:
        label = ("largest object file" if all(r["kind"] == "object" for r in report["files"])
                 else "model size (largest compiled file)")
        lines.append(f"{label}: {_human(largest['bytes'])}  {largest['path']}")
    lines.append(f"total of {report['count']} compiled files: {_human(report['total_bytes'])}")
    lines.append(f"vendored libraries: {report['vendored_count']} files, "
                 f"{_human(report['vendored_bytes'])}")
    runpaths = {}
    for record in report["files"] + report["vendored"]:
        absolute = [p for p in record.get("runpath", []) if p and not p.startswith("$ORIGIN")]
        if absolute:
            runpaths.setdefault(":".join(absolute), []).append(os.path.basename(record["path"]))
    for runpath, names in runpaths.items():
        which = "every compiled file" if len(names) == len(report["files"] + report["vendored"]) \
            else ", ".join(names)
        lines.append(f"note: {which} has the run-time search path {runpath} (an absolute folder "
                     "of the build machine; harmless where it does not exist)")
    for scan_note in sorted({r["isa"]["reason"] for r in report["files"] + report["vendored"]
                             if r.get("isa", {}).get("reason")}):
        lines.append(f"isa note: {scan_note}")
    for reason in reasons:
        lines.append(f"FAIL: {reason}")
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="a folder, a .whl file or a compiled file (default: the installed "
                             "fastbp package, as `import fastbp` finds it)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--max-bytes", type=int, metavar="N",
                        help="exit 1 if the largest compiled file is over N bytes")
    parser.add_argument("--max-total-bytes", type=int, metavar="N",
                        help="exit 1 if the compiled files together are over N bytes "
                             "(vendored libraries not counted)")
    parser.add_argument("--isa", action="store_true",
                        help="disassemble (objdump) and report instructions beyond the x86-64 "
                             "baseline")
    parser.add_argument("--check-isa", action="store_true",
                        help="like --isa, and exit 1 if such instructions are not behind a "
                             "runtime CPU check (target_clones / ifunc / *_avx2 variants)")


def run(args):
    show_isa = args.isa or args.check_isa
    try:
        reports = [measure(target, isa=show_isa) for target in (args.paths or [None])]
    except (FileNotFoundError, zipfile.BadZipFile) as error:
        print(f"fastbp size: {error}", file=sys.stderr)
        return 2
    report = merge(reports)
    reasons = check(report, args.max_bytes, args.max_total_bytes, args.check_isa)
    report["checks"] = {"max_bytes": args.max_bytes, "max_total_bytes": args.max_total_bytes,
                        "check_isa": args.check_isa, "ok": not reasons, "reasons": reasons}
    if args.json:
        print(json.dumps(report, indent=2))
        for reason in reasons:
            print(f"fastbp size: FAIL: {reason}", file=sys.stderr)
    else:
        print(format_table(report, reasons, show_isa))
    return 1 if reasons else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastbp size", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
