#!/usr/bin/env python3
"""Where a release binary's bytes go, by crate: tests/bench/sizes.py BINARY [NM] [READELF].

The release profile strips debug information but keeps the symbol table, so every function and static
still has its (demangled) name and size. Each symbol is charged to a crate:

- a Rust path `crate::module::item` to `crate`; a trait impl `<Type as Trait>::item` to the crate of
  `Type`; a generic from core/alloc/std (`core::ptr::drop_in_place<hyper::...>`, `alloc::vec::Vec<T>`
  methods) to the first non-standard crate among its type parameters, since that crate made the
  instantiation exist; plain `std`/`core`/`alloc` when none;
- a C symbol to `openssl (C, static)` when the binary contains OpenSSL (the cross build's vendored
  OpenSSL; glibc is always dynamic, so OpenSSL is the only large C library that can be in it), else
  `C (other)` (the host build links the system's libssl/libcrypto dynamically);
- LLVM's anonymous constants (`anon.*.llvm.*`: string and table literals merged across crates) to
  `(Rust anonymous constants)`.

Section sizes (from readelf) show what no symbol covers: string constants and other anonymous
read-only data, unwind tables (.eh_frame, .gcc_except_table), relocations. Prints a table and, last, one
JSON line {"figure":"size_breakdown",...} for tests/bench/peers.sh.
"""
import json
import re
import subprocess
import sys
from collections import defaultdict

STD = {"core", "alloc", "std", "std_detect", "panic_unwind", "compiler_builtins", "hashbrown",
       "rustc_demangle", "addr2line", "gimli", "miniz_oxide", "object", "memchr", "adler2", "adler"}

def crate_of(name, static_openssl):
    """The crate a demangled symbol name belongs to."""
    if name.startswith("anon.") and ".llvm." in name:
        return "(Rust anonymous constants)"
    if "::" not in name:
        # glibc is linked dynamically; a static OpenSSL is the only large C library in the binary.
        return "openssl (C, static)" if static_openssl else "C (other)"
    s = name
    # `<Type as Trait>::item` and `<Type>::item`: the type decides.
    while s.startswith("<"):
        s = s[1:]
    s = s.lstrip("&*[(").replace("mut ", "").replace("dyn ", "").replace("const ", "")
    first = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s)
    if not first:
        return "(other)"
    crate = first.group(0)
    # A standard-library generic, or a bare type parameter (`<T as Trait>`, `<F as FnOnce>`): the first
    # other crate named in it made the instantiation exist.
    if crate in STD or crate.startswith("_") or len(crate) == 1:
        for cand in re.findall(r"(?:^|[<(,&\s\[*])(?:dyn |mut |const )?([A-Za-z_][A-Za-z0-9_]*)::", name):
            if cand not in STD and len(cand) > 1:
                return cand
        return "std/core/alloc"
    return crate


def main():
    if len(sys.argv) < 2:
        print("usage: tests/bench/sizes.py BINARY [NM] [READELF]", file=sys.stderr)
        sys.exit(2)
    binary = sys.argv[1]
    nm = sys.argv[2] if len(sys.argv) > 2 else "nm"
    readelf = sys.argv[3] if len(sys.argv) > 3 else "readelf"
    out = subprocess.run([nm, "-C", "-S", "--size-sort", "--radix=d", binary],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"sizes.py: {nm} failed on {binary}: {out.stderr.strip()}", file=sys.stderr)
        sys.exit(1)
    static_openssl = re.search(r"^\S+ \S+ [TtDdRr] OPENSSL_init_crypto$", out.stdout, re.M) is not None
    by_crate = defaultdict(lambda: [0, 0])  # crate -> [code, data]
    for line in out.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        _addr, size, kind, name = parts
        size = int(size)
        slot = 0 if kind in "tTwW" else 1
        by_crate[crate_of(name, static_openssl)][slot] += size
    sec = subprocess.run([readelf, "-SW", binary], capture_output=True, text=True)
    sections = {}
    for line in sec.stdout.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m and m.group(1) != "NULL":
            sections[m.group(1)] = int(m.group(2), 16)
    total = sum(by_crate[c][0] + by_crate[c][1] for c in by_crate)
    rows = sorted(by_crate.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
    print(f"{binary}: symbols {total / 1e6:.2f} MB in all (code + named data), by crate:")
    for crate, (code, data) in rows[:30]:
        print(f"  {crate:32} {(code + data) / 1e6:7.3f} MB  (code {code / 1e6:.3f}, data {data / 1e6:.3f})")
    rest = sum(c + d for _, (c, d) in rows[30:])
    print(f"  {'(' + str(len(rows) - 30) + ' more crates)':32} {rest / 1e6:7.3f} MB")
    interesting = [".text", ".rodata", ".eh_frame", ".eh_frame_hdr", ".gcc_except_table",
                   ".data.rel.ro", ".rela.dyn", ".data", ".bss", ".dynsym", ".dynstr", ".symtab", ".strtab"]
    print("  sections: " + ", ".join(f"{s} {sections[s] / 1e6:.2f} MB" for s in interesting if s in sections))
    print(json.dumps({
        "figure": "size_breakdown",
        "crates": [{"crate": c, "bytes": cd + dd} for c, (cd, dd) in rows[:30]],
        "sections": {s: sections[s] for s in interesting if s in sections},
        "symbols_bytes": total,
    }))


if __name__ == "__main__":
    main()
