#!/usr/bin/env python3
"""Where a release binary's bytes go, by crate: tests/bench/sizes.py BINARY [NM] [READELF].

The release profile strips debug information but keeps the symbol table, so every function and static
still has its (demangled) name and size. Each symbol is charged to a crate:

- a Rust path `crate::module::item` to `crate`; a trait impl `<Type as Trait>::item` to the crate of
  `Type`; a generic from core/alloc/std (`core::ptr::drop_in_place<hyper::...>`, `alloc::vec::Vec<T>`
  methods) to the first non-standard crate among its type parameters, since that crate made the
  instantiation exist; plain `std`/`core`/`alloc` when none;
- a C symbol to `openssl (C)` when it is one of OpenSSL's (a static, vendored OpenSSL in the cross
  build; the host build links the system's libssl/libcrypto dynamically), else `C (other)`.

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
# Crates whose names are shared by the standard library's internals keep their own name only when they
# are not std's private copies; std's copies are named `std::...` paths anyway.
OPENSSL_C = re.compile(
    r"^(ossl_|OSSL_|EVP_|SSL_|SSL3_|ssl_|tls_|tls1_|dtls1_|DTLS_|BN_|bn_|EC_|ec_|ECDSA_|ECDH_|RSA_|rsa_|"
    r"DSA_|dsa_|DH_|dh_|X509|x509|ASN1_|asn1_|PEM_|pem_|OPENSSL_|CRYPTO_|ERR_|err_|BIO_|bio_|OBJ_|obj_|"
    r"PKCS|pkcs|EVP|AES_|aes_|ChaCha|chacha|Poly1305|poly1305|SHA|sha|MD5|md5|HMAC|hmac|CMAC|RAND_|rand_|"
    r"CONF_|conf_|NCONF_|OCSP_|ocsp_|CMS_|cms_|UI_|ENGINE_|engine_|ECX|ecx|X25519|x25519|X448|x448|ED25519|"
    r"ED448|ed25519|ed448|curve25519|curve448|gcm_|GCM|CRYPTO|OPENSSL|BUF_|buf_|LHASH|lh_|OPENSSL_sk|sk_|"
    r"DES_|des_|RC4|rc4|RC2|BF_|CAST_|camellia|Camellia|aria|ARIA|SM2|sm2|SM3|sm3|SM4|sm4|SCT_|CT_|ct_|"
    r"TS_|ts_|SRP_|srp_|SEED_|seed_|whirlpool|WHIRLPOOL|RIPEMD|ripemd|blake2|BLAKE2|keccak|Keccak|SHA3|"
    r"poly1305|siphash|SIPHASH|COMP_|DSO_|dso_|async_|ASYNC_|OPENSSL_ia32|ecp_|x86_64_|aesni_|vpaes_|"
    r"bsaes_|sha1_|sha256_|sha512_|ChaCha20_|rsaz_|RSAZ|padlock|EVP_|ERR|OBJ|ossl|tls13|dtls|i2d_|d2i_|"
    r"i2a_|a2i_|i2s_|s2i_|i2v_|v2i_|i2r_|r2i_|policy_|level_add_node|tree_|check_|ssl3_|cmac_|"
    r"kdf_|KDF_|prov_|PROV_|der_|DER_|ecdsa_|eddsa_|encode_|decode_|cipher_|digest_|mac_|kem_|rand_|"
    r"drbg_|DRBG|ripemd160|md4|MD4|mdc2|MDC2|idea|IDEA|rc5|RC5)"
)


def crate_of(name):
    """The crate a demangled symbol name belongs to."""
    if "::" not in name:
        if OPENSSL_C.match(name):
            return "openssl (C)"
        return "C (other)"
    s = name
    # `<Type as Trait>::item` and `<Type>::item`: the type decides.
    while s.startswith("<"):
        s = s[1:]
    s = s.lstrip("&*").replace("mut ", "").replace("dyn ", "").replace("const ", "")
    first = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s)
    if not first:
        return "other"
    crate = first.group(0)
    if crate in STD or crate.startswith("_"):
        for cand in re.findall(r"[<(,&\s\[]\s*(?:dyn |mut |const )?([A-Za-z_][A-Za-z0-9_]*)::", name):
            if cand not in STD:
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
    by_crate = defaultdict(lambda: [0, 0])  # crate -> [code, data]
    symbol_total = 0
    for line in out.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        _addr, size, kind, name = parts
        size = int(size)
        symbol_total += size
        slot = 0 if kind in "tTwW" else 1
        by_crate[crate_of(name)][slot] += size
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
