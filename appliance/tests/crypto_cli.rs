//! `concentrator crypto` over every entry of the 3GPP test data, run as the built binary, plus the
//! usage errors (exit code 2).

use std::process::{Command, Output};

use serde_json::Value;

/// The security crate's copy of shared/vectors/3gpp.json.
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../security/tests/fixtures/3gpp.json"
);

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(VECTORS).expect("read 3gpp.json"))
        .expect("parse 3gpp.json")
}

fn crypto(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concentrator"))
        .arg("crypto")
        .args(args)
        .output()
        .expect("run concentrator")
}

/// Runs and returns the NAME=value lines as pairs; fails on a non-zero exit.
fn lines(args: &[&str]) -> Vec<(String, String)> {
    let out = crypto(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn get(lines: &[(String, String)], name: &str) -> String {
    lines
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
        .1
        .clone()
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing"))
}

fn first_bits_hex(hex_str: &str, bits: usize) -> String {
    let mut b = hex::decode(hex_str).unwrap();
    b.truncate(bits.div_ceil(8));
    if !bits.is_multiple_of(8) {
        let last = b.len() - 1;
        b[last] &= 0xffu8 << (8 - bits % 8);
    }
    hex::encode(b)
}

#[test]
fn milenage_sets() {
    let v = vectors();
    for cat in ["milenage", "milenage_35207"] {
        for e in v["vectors"][cat].as_array().unwrap() {
            for key_arg in ["--op", "--opc"] {
                let key_val = if key_arg == "--op" {
                    s(e, "OP")
                } else {
                    s(e, "OPc")
                };
                let l = lines(&[
                    "milenage",
                    "--k",
                    s(e, "K"),
                    key_arg,
                    key_val,
                    "--rand",
                    s(e, "RAND"),
                    "--sqn",
                    s(e, "SQN"),
                    "--amf",
                    s(e, "AMF"),
                ]);
                assert_eq!(get(&l, "OPc"), s(e, "OPc"), "{}", e["name"]);
                assert_eq!(get(&l, "MAC-A"), s(e, "f1"));
                assert_eq!(get(&l, "MAC-S"), s(e, "f1star"));
                assert_eq!(get(&l, "RES"), s(e, "f2"));
                assert_eq!(get(&l, "CK"), s(e, "f3"));
                assert_eq!(get(&l, "IK"), s(e, "f4"));
                assert_eq!(get(&l, "AK"), s(e, "f5"));
                assert_eq!(get(&l, "AK*"), s(e, "f5star"));
                if let Some(autn) = e.get("derived_AUTN_SQNxorAK_AMF_MACA") {
                    assert_eq!(get(&l, "AUTN"), autn.as_str().unwrap());
                }
            }
        }
    }
}

#[test]
fn aka_autn_auts_sets() {
    let v = vectors();
    for e in v["vectors"]["aka_autn_auts"].as_array().unwrap() {
        if e.get("AUTS").is_some() {
            let base = [
                "--k",
                s(e, "K"),
                "--opc",
                s(e, "OPc"),
                "--rand",
                s(e, "RAND"),
            ];
            let mut args = vec!["auts"];
            args.extend(base);
            args.extend(["--sqn-ms", s(e, "SQN_MS")]);
            assert_eq!(get(&lines(&args), "AUTS"), s(e, "AUTS"));
            let mut args = vec!["resync"];
            args.extend(base);
            args.extend(["--auts", s(e, "AUTS")]);
            assert_eq!(get(&lines(&args), "SQN-MS"), s(e, "SQN_MS"));
        } else if e.get("RAND").is_some() {
            let l = lines(&[
                "milenage",
                "--k",
                s(e, "K"),
                "--opc",
                s(e, "OPc"),
                "--rand",
                s(e, "RAND"),
                "--sqn",
                s(e, "SQN"),
                "--amf",
                s(e, "AMF"),
            ]);
            assert_eq!(get(&l, "AUTN"), s(e, "AUTN"));
            assert_eq!(get(&l, "CK"), s(e, "CK"));
            assert_eq!(get(&l, "IK"), s(e, "IK"));
            assert_eq!(get(&l, "RES"), s(e, "RES"));
        } else {
            let l = lines(&[
                "milenage",
                "--k",
                s(e, "K"),
                "--op",
                s(e, "OP"),
                "--rand",
                &"00".repeat(16),
                "--sqn",
                &"00".repeat(6),
                "--amf",
                "0000",
            ]);
            assert_eq!(get(&l, "OPc"), s(e, "OPc"));
        }
    }
}

#[test]
fn kasumi_sets() {
    let v = vectors();
    for e in v["vectors"]["kasumi"].as_array().unwrap() {
        let l = lines(&["kasumi", "--key", s(e, "key"), "--block", s(e, "plaintext")]);
        assert_eq!(get(&l, "CIPHERTEXT"), s(e, "ciphertext"));
    }
}

#[test]
fn f8_sets() {
    let v = vectors();
    for (cat, alg) in [("uea1_f8", "uea1"), ("eea2", "eea2")] {
        for e in v["vectors"][cat].as_array().unwrap() {
            let bits = e["length_bits"].as_u64().unwrap() as usize;
            let (bearer, dir, len) = (
                e["bearer"].to_string(),
                e["direction"].to_string(),
                bits.to_string(),
            );
            let l = lines(&[
                "f8",
                "--alg",
                alg,
                "--key",
                s(e, "key"),
                "--count",
                s(e, "count"),
                "--bearer",
                &bearer,
                "--direction",
                &dir,
                "--length-bits",
                &len,
                "--data",
                s(e, "plaintext"),
            ]);
            assert_eq!(
                get(&l, "OUTPUT"),
                first_bits_hex(s(e, "ciphertext"), bits),
                "{}",
                e["name"]
            );
        }
    }
}

#[test]
fn f9_sets() {
    let v = vectors();
    for e in v["vectors"]["uia1_f9"].as_array().unwrap() {
        let (dir, len) = (e["direction"].to_string(), e["length_bits"].to_string());
        let l = lines(&[
            "f9",
            "--alg",
            "uia1",
            "--key",
            s(e, "key"),
            "--count",
            s(e, "count"),
            "--fresh",
            s(e, "fresh"),
            "--direction",
            &dir,
            "--length-bits",
            &len,
            "--data",
            s(e, "message"),
        ]);
        assert_eq!(get(&l, "MAC"), s(e, "mac_i"), "{}", e["name"]);
    }
    for e in v["vectors"]["eia2"].as_array().unwrap() {
        let (bearer, dir, len) = (
            e["bearer"].to_string(),
            e["direction"].to_string(),
            e["length_bits"].to_string(),
        );
        let l = lines(&[
            "f9",
            "--alg",
            "eia2",
            "--key",
            s(e, "key"),
            "--count",
            s(e, "count"),
            "--bearer",
            &bearer,
            "--direction",
            &dir,
            "--length-bits",
            &len,
            "--data",
            s(e, "message"),
        ]);
        assert_eq!(get(&l, "MAC"), s(e, "mac"), "{}", e["name"]);
    }
}

#[test]
fn suci_sets() {
    let v = vectors();
    for e in v["vectors"]["suci_ecies"].as_array().unwrap() {
        let Some(profile) = e["profile"].as_str() else {
            // The null scheme has nothing to conceal: its scheme output is the BCD MSIN itself.
            assert_eq!(s(e, "scheme_input"), s(e, "scheme_output"));
            continue;
        };
        let profile = profile.to_ascii_lowercase();
        let l = lines(&[
            "suci",
            "conceal",
            "--profile",
            &profile,
            "--hn-public",
            s(e, "hn_pub"),
            "--eph-private",
            s(e, "eph_priv"),
            "--msin",
            s(e, "msin"),
        ]);
        assert_eq!(
            get(&l, "SCHEME-OUTPUT"),
            s(e, "scheme_output"),
            "{}",
            e["name"]
        );
        let l = lines(&[
            "suci",
            "reveal",
            "--profile",
            &profile,
            "--hn-private",
            s(e, "hn_priv"),
            "--scheme-output",
            s(e, "scheme_output"),
        ]);
        assert_eq!(get(&l, "MSIN"), s(e, "msin"));
    }
}

#[test]
fn bad_input_exits_with_2_and_says_why() {
    let k = "465b5ce8b199b49faa5f0a2ee238a6bc";
    let k32 = k.repeat(2);
    let cases: &[(&[&str], &str)] = &[
        (
            &["kasumi", "--key", "zz", "--block", "0011223344556677"],
            "not hex",
        ),
        (
            &["kasumi", "--key", k, "--block", "00112233"],
            "expected 8 octets",
        ),
        (&["kasumi", "--key", k], "--block"),
        (
            &[
                "milenage",
                "--k",
                k,
                "--rand",
                k,
                "--sqn",
                "000000000001",
                "--amf",
                "0000",
            ],
            "--op",
        ),
        (
            &[
                "milenage",
                "--k",
                k,
                "--op",
                k,
                "--opc",
                k,
                "--rand",
                k,
                "--sqn",
                "000000000001",
                "--amf",
                "0000",
            ],
            "--opc",
        ),
        (
            &[
                "f8",
                "--alg",
                "uea1",
                "--key",
                k,
                "--count",
                "00000001",
                "--bearer",
                "3",
                "--direction",
                "1",
                "--length-bits",
                "64",
                "--data",
                "00",
            ],
            "needs 8 octets",
        ),
        (
            &[
                "f8",
                "--alg",
                "eea2",
                "--key",
                k,
                "--count",
                "00000001",
                "--bearer",
                "32",
                "--direction",
                "1",
                "--length-bits",
                "8",
                "--data",
                "00",
            ],
            "bearer 32",
        ),
        (
            &[
                "f9",
                "--alg",
                "uia1",
                "--key",
                k,
                "--count",
                "00000001",
                "--direction",
                "0",
                "--length-bits",
                "8",
                "--data",
                "00",
            ],
            "--fresh",
        ),
        (
            &[
                "f9",
                "--alg",
                "eia2",
                "--key",
                k,
                "--count",
                "00000001",
                "--direction",
                "2",
                "--bearer",
                "1",
                "--length-bits",
                "8",
                "--data",
                "00",
            ],
            "--direction",
        ),
        (
            &[
                "suci",
                "conceal",
                "--profile",
                "a",
                "--hn-public",
                "00",
                "--eph-private",
                &k32,
                "--msin",
                "123",
            ],
            "public key",
        ),
        (
            &[
                "suci",
                "conceal",
                "--profile",
                "b",
                "--hn-public",
                &k32,
                "--eph-private",
                &k32,
                "--msin",
                "12x",
            ],
            "MSIN",
        ),
        (
            &[
                "suci",
                "reveal",
                "--profile",
                "b",
                "--hn-private",
                &k32,
                "--scheme-output",
                "0011",
            ],
            "too short",
        ),
        (
            &[
                "suci",
                "conceal",
                "--profile",
                "c",
                "--hn-public",
                "00",
                "--eph-private",
                k,
                "--msin",
                "123",
            ],
            "--profile",
        ),
    ];
    for (args, needle) in cases {
        let out = crypto(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr {err:?} does not mention {needle:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}
