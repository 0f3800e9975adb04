"""ELF headers read with ``struct``, without loading the file: the parser behind ``fastbp size``
(fastbp.tools.size_report) and the check that a compiled module is whole before it is imported.

A shared object cut short still loads: the dynamic loader maps its segments past the end of the
file, and the first touch of a missing page kills the process with SIGBUS.  ``damage(path)``
says, before any import, whether an ELF file's section headers and loadable segments lie inside
it.  ``CheckedExtensions`` is the import hook that puts this check before every import of a
compiled module of fastbp (``fastbp.*._c_*``, however it is imported: they also import each other
from C), so that a damaged one raises ImportError naming the file and the damage; importing
``fastbp._platform`` installs it.  Standard library only: this module sits below every other one of
fastbp.
"""
import importlib.machinery
import os
import struct
import sys

__all__ = ["CheckedExtensions", "install_import_hook", "ElfError", "Source", "read_headers", "cstr",
           "damage", "SHT_NOBITS", "PT_LOAD"]

SHT_NOBITS = 8  # a section that occupies no bytes of the file (.bss)
PT_LOAD = 1     # a segment the loader maps from the file


class ElfError(ValueError):
    """The file is not a (complete) ELF file."""


class Source:
    """Random access to the bytes of a file on disk or in memory; short reads raise ElfError."""

    def __init__(self, path=None, data=None):
        self.path, self.data = path, data
        self.size = len(data) if data is not None else os.path.getsize(path)
        self._file = None

    def __enter__(self):
        if self.data is None:
            self._file = open(self.path, "rb")
        return self

    def __exit__(self, *exc_info):
        if self._file is not None:
            self._file.close()
        return False

    def read(self, offset, size, what):
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"truncated: {what} at bytes {offset}..{offset + size} "
                           f"lies beyond the end of the file ({self.size} bytes)")
        if self.data is not None:
            return self.data[offset:offset + size]
        self._file.seek(offset)
        return self._file.read(size)


def cstr(table, offset):
    """The NUL-terminated string at ``offset`` of a string table."""
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def read_headers(src):
    """The ELF header, section headers (with names) and loadable segments of a :class:`Source`,
    checked against its size: a dict with ``end`` (struct byte order), ``is64``, ``elf_class``,
    ``byte_order``, ``e_type``, ``e_machine`` and ``sections`` (dicts: name, type, flags,
    offset, size, link, info, entsize).  Raises ElfError for a file that is not ELF, or whose
    headers, sections or segments run past its end."""
    ident = src.read(0, 16, "ELF identification")
    if ident[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    elf_class, byte_order = ident[4], ident[5]
    if elf_class not in (1, 2):
        raise ElfError(f"bad ELF class {elf_class}")
    if byte_order not in (1, 2):
        raise ElfError(f"bad ELF data encoding {byte_order}")
    end = "<" if byte_order == 1 else ">"
    is64 = elf_class == 2
    header_fmt = end + ("HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH")
    (e_type, e_machine, _version, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
     e_phnum, e_shentsize, e_shnum, e_shstrndx) = struct.unpack(
        header_fmt, src.read(16, struct.calcsize(header_fmt), "ELF header"))

    segment_fmt = end + ("IIQQQQQQ" if is64 else "IIIIIIII")
    if e_phoff and e_phnum:
        if e_phentsize != struct.calcsize(segment_fmt):
            raise ElfError(f"program header size {e_phentsize}, expected "
                           f"{struct.calcsize(segment_fmt)}")
        table = src.read(e_phoff, e_phnum * e_phentsize, "program header table")
        for index in range(e_phnum):
            fields = struct.unpack_from(segment_fmt, table, index * e_phentsize)
            # ELF64: type, flags, offset, ...; ELF32: type, offset, ..., filesz at [4]
            p_type, offset, filesz = ((fields[0], fields[2], fields[5]) if is64
                                      else (fields[0], fields[1], fields[4]))
            if p_type == PT_LOAD and offset + filesz > src.size:
                raise ElfError(f"truncated: loadable segment {index} ends at byte "
                               f"{offset + filesz}, beyond the end of the file ({src.size} bytes)")

    section_fmt = end + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
    section_size = struct.calcsize(section_fmt)
    sections = []
    if e_shoff:
        if e_shentsize != section_size:
            raise ElfError(f"section header size {e_shentsize}, expected {section_size}")

        def section_header(index):
            raw = src.read(e_shoff + index * section_size, section_size, f"section header {index}")
            name, sh_type, flags, _addr, offset, size, link, info, _align, entsize = \
                struct.unpack(section_fmt, raw)
            return {"name_offset": name, "type": sh_type, "flags": flags, "offset": offset,
                    "size": size, "link": link, "info": info, "entsize": entsize}

        first = section_header(0)
        count = e_shnum or first["size"]          # more than 0xff00 sections: count in [0]
        if e_shstrndx == 0xFFFF:
            e_shstrndx = first["link"]
        src.read(e_shoff, count * section_size, "section header table")  # whole table there?
        sections = [first] + [section_header(i) for i in range(1, count)]
        if sections and e_shstrndx < len(sections):
            strtab = sections[e_shstrndx]
            names = src.read(strtab["offset"], strtab["size"], "section name table")
        else:
            names = b""
        for section in sections:
            section["name"] = cstr(names, section["name_offset"]) if names else ""
            if section["type"] != SHT_NOBITS and section["size"]:
                if section["offset"] + section["size"] > src.size:
                    raise ElfError(f"truncated: section {section['name']} ends at byte "
                                   f"{section['offset'] + section['size']}, beyond the end "
                                   f"of the file ({src.size} bytes)")
    return {"end": end, "is64": is64, "elf_class": elf_class, "byte_order": byte_order,
            "e_type": e_type, "e_machine": e_machine, "sections": sections}


def damage(path):
    """Why the ELF file at ``path`` cannot be loaded safely (a string), or None when it is whole,
    or is no ELF file at all (another platform's format: its own loader judges it)."""
    try:
        with Source(path) as src:
            if src.read(0, min(4, src.size), "magic") != b"\x7fELF":
                return None
            read_headers(src)
    except ElfError as error:
        return str(error)
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return None


class CheckedExtensions:
    """Import hook (on sys.meta_path): finds fastbp's compiled modules as the path finder does,
    and refuses those whose file is damaged (ImportError naming the file and the damage)."""

    def find_spec(self, name, path=None, target=None):
        package, _, module = name.rpartition(".")
        if not (module.startswith("_c_") and package.partition(".")[0] == "fastbp"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            found = damage(spec.origin)
            if found is not None:
                raise ImportError(f"{os.path.basename(spec.origin)} is damaged ({found})",
                                  name=name, path=spec.origin)
        return spec


def install_import_hook():
    """Put the hook just before the path finder (after any hook that others put first), once."""
    finders, path_finder = sys.meta_path, importlib.machinery.PathFinder
    if any(isinstance(finder, CheckedExtensions) for finder in finders):
        return
    where = finders.index(path_finder) if path_finder in finders else len(finders)
    finders.insert(where, CheckedExtensions())
