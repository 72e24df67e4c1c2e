//! Benchmarks of the security core: `cargo bench -p concentrator-security` (a few seconds per figure).
//!
//! Figures reported in docs/security.md: Milenage vectors per second, KASUMI f8/f9 and EEA2 throughput,
//! EIA2 MACs per second on 64-octet messages, token verifications per second; plus the AES per-call cost
//! of the `aes` crate against openssl's EVP interface, which decided the AES backend.
//!
//! With `--lines` (`cargo bench -p concentrator-security --bench crypto -- --lines [FIGURE...]`) it skips
//! criterion and prints one JSON object per figure, the best of `BENCH_ROUNDS` rounds (default 5) of
//! `BENCH_SECS` seconds each (default 1): the rows tests/bench/peers.sh sets beside libosmocore and
//! `openssl speed`. The best round is the one least disturbed on a shared machine; the peers are measured
//! the same way. `BENCH_F8_OCTETS` sets the KASUMI f8 message length (default 1,523, the longest message
//! libosmocore's GEA4 takes). Figures: `milenage` (vectors/s, key schedule cached, and with the key
//! schedule per vector as libosmocore does), `kasumi` (f8 MB/s over one message, and ns per block chained
//! and for 4 independent blocks), `token` (token verifications/s and bare ECDSA P-256 verifications/s
//! through the openssl crate, in the same round).

#[path = "../tests/common/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::hint::black_box;
use std::time::Duration;

use concentrator_security::aes128::Aes128Key;
use concentrator_security::bits::Direction;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::token::{CreditToken, SignedToken, TokenSigner, TokenVerifier};
use concentrator_security::uea1_uia1::F8Job;
use concentrator_security::{Eea2, Eia2, Kasumi, Milenage, Uea1, Uia1};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use openssl::symm::{Cipher, Crypter, Mode};

fn quick(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("security");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    g
}

fn aes_backends(c: &mut Criterion) {
    let mut g = quick(c);
    g.throughput(Throughput::Elements(1));
    let key = Aes128Key::new(&[7; 16]);
    g.bench_function("aes128_block_rustcrypto", |b| {
        let mut blk = [1u8; 16];
        b.iter(|| {
            key.encrypt(black_box(&mut blk));
        })
    });
    let mut crypter = Crypter::new(Cipher::aes_128_ecb(), Mode::Encrypt, &[7; 16], None).unwrap();
    crypter.pad(false);
    g.bench_function("aes128_block_openssl_evp", |b| {
        let input = [1u8; 16];
        let mut out = [0u8; 32];
        b.iter(|| crypter.update(black_box(&input), &mut out).unwrap())
    });
    g.finish();
}

fn milenage(c: &mut Criterion) {
    let mut g = quick(c);
    g.throughput(Throughput::Elements(1));
    let m = Milenage::with_opc(&[0x46; 16], &[0xcd; 16]);
    let mut rand = [0x23u8; 16];
    g.bench_function("milenage_vector_cached_key", |b| {
        b.iter(|| {
            rand[0] = rand[0].wrapping_add(1);
            black_box(m.compute(black_box(&rand), &[0, 0, 0, 0, 0, 0x22], &[0x80, 0]))
        })
    });
    g.throughput(Throughput::Elements(8));
    let inputs: Vec<([u8; 16], [u8; 6])> =
        (0..8u8).map(|i| ([i; 16], [0, 0, 0, 0, 1, i])).collect();
    g.bench_function("milenage_8_vectors_batched", |b| {
        b.iter(|| black_box(m.compute_many(black_box(&inputs), &[0x80, 0])))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("milenage_vector_with_key_setup", |b| {
        b.iter(|| {
            rand[0] = rand[0].wrapping_add(1);
            let m = Milenage::with_opc(black_box(&[0x46; 16]), &[0xcd; 16]);
            black_box(m.compute(black_box(&rand), &[0, 0, 0, 0, 0, 0x22], &[0x80, 0]))
        })
    });
    g.finish();
}

fn ciphers(c: &mut Criterion) {
    let mut g = quick(c);
    const LEN: usize = 16 * 1024;
    g.throughput(Throughput::Bytes(LEN as u64));
    let mut buf = vec![0x5au8; LEN];
    let uea1 = Uea1::new(&[9; 16]);
    g.bench_function("kasumi_f8_16k", |b| {
        b.iter(|| {
            uea1.apply(1, 2, Direction::Uplink, black_box(&mut buf), LEN * 8)
                .unwrap()
        })
    });
    let eea2 = Eea2::new(&[9; 16]);
    g.bench_function("eea2_16k", |b| {
        b.iter(|| {
            eea2.apply(1, 2, Direction::Uplink, black_box(&mut buf), LEN * 8)
                .unwrap()
        })
    });
    let keys: Vec<Uea1> = (0..8u8).map(|i| Uea1::new(&[i; 16])).collect();
    let mut bufs: Vec<Vec<u8>> = (0..8).map(|_| vec![0x5au8; LEN / 8]).collect();
    g.bench_function("kasumi_f8_16k_as_8_messages_batched", |b| {
        b.iter(|| {
            let mut jobs: Vec<F8Job<'_>> = bufs
                .iter_mut()
                .zip(&keys)
                .map(|(buf, key)| F8Job {
                    key,
                    count: 1,
                    bearer: 2,
                    direction: Direction::Uplink,
                    buf,
                    length_bits: LEN,
                })
                .collect();
            Uea1::apply_batch(black_box(&mut jobs)).unwrap()
        })
    });
    g.throughput(Throughput::Bytes(8 * 4));
    let k = Kasumi::new(&[3; 16]);
    g.bench_function("kasumi_4_independent_blocks", |b| {
        let mut x = [1u64, 2, 3, 4];
        b.iter(|| {
            x = k.encrypt_x4(black_box(x));
        })
    });
    let uia1 = Uia1::new(&[9; 16]);
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("kasumi_f9_16k", |b| {
        b.iter(|| {
            uia1.mac(1, 2, Direction::Uplink, black_box(&buf), LEN * 8)
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    let msg = [0x11u8; 64];
    g.bench_function("kasumi_f9_mac_64_octets", |b| {
        b.iter(|| {
            uia1.mac(1, 2, Direction::Uplink, black_box(&msg), 512)
                .unwrap()
        })
    });
    let eia2 = Eia2::new(&[9; 16]);
    g.bench_function("eia2_mac_64_octets", |b| {
        b.iter(|| {
            eia2.mac(1, 2, Direction::Uplink, black_box(&msg), 512)
                .unwrap()
        })
    });
    g.finish();
}

/// The test PKI, its head-end's token signer, a verifier that trusts it, and one credit token signed.
struct TokenFixture {
    pki: pki::TestPki,
    signer: TokenSigner,
    verifier: TokenVerifier,
    token: CreditToken,
    signed: SignedToken,
}

fn token_fixture() -> TokenFixture {
    let test_pki = pki::TestPki::new();
    let signer = TokenSigner::new(
        DocumentSigner::new(
            test_pki.head_end_key.clone(),
            std::slice::from_ref(&test_pki.head_end),
        )
        .unwrap_or_else(|e| panic!("bench signer: {e}")),
    );
    let verifier = TokenVerifier::new(vec![test_pki.ca.clone()]);
    let token = CreditToken {
        meter_id: "04123456789".into(),
        serial: 1,
        amount_minor: 1000,
        currency: *b"EUR",
        issued_at: pki::NOW - 10,
        expires_at: pki::NOW + 1000,
        key_id: [0; 8],
    };
    let signed = signer
        .sign(&token)
        .unwrap_or_else(|e| panic!("bench token: {e}"));
    TokenFixture {
        pki: test_pki,
        signer,
        verifier,
        token,
        signed,
    }
}

fn tokens(c: &mut Criterion) {
    let mut g = quick(c);
    g.throughput(Throughput::Elements(1));
    let TokenFixture {
        pki: p,
        signer,
        verifier,
        token,
        signed,
    } = token_fixture();
    g.bench_function("token_verify", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&signed), "04123456789", pki::NOW)
                .unwrap()
        })
    });
    g.bench_function("token_verify_cold_chain", |b| {
        b.iter_batched(
            || TokenVerifier::new(vec![p.ca.clone()]),
            |v| v.verify(&signed, "04123456789", pki::NOW).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let ec = p.head_end.public_key().unwrap().ec_key().unwrap();
    let digest = openssl::sha::sha256(&signed.0.body);
    let sig = openssl::ecdsa::EcdsaSig::from_der(&signed.0.signature).unwrap();
    g.bench_function("raw_ecdsa_p256_verify", |b| {
        b.iter(|| assert!(sig.verify(black_box(&digest), &ec).unwrap()))
    });
    g.bench_function("token_sign", |b| {
        b.iter(|| signer.sign(black_box(&token)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, aes_backends, milenage, ciphers, tokens);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--lines") {
        let wanted: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with("--"))
            .collect();
        lines::run(&wanted);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// The `--lines` mode: best-of-N rounds, one JSON object per figure on stdout.
mod lines {
    use super::*;
    use std::time::Instant;

    fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Operations per second of the best of `rounds` rounds of about `secs` seconds; `op` runs `batch`
    /// operations per call.
    fn best(rounds: u32, secs: f64, batch: u64, mut op: impl FnMut()) -> f64 {
        let mut best = 0f64;
        for _ in 0..rounds {
            let start = Instant::now();
            let mut n = 0u64;
            let elapsed = loop {
                op();
                n += batch;
                let e = start.elapsed().as_secs_f64();
                if e >= secs {
                    break e;
                }
            };
            best = best.max(n as f64 / elapsed);
        }
        best
    }

    fn line(figure: &str, value: f64, extra: &str) {
        println!("{{\"figure\":\"{figure}\",\"value\":{value:.3}{extra}}}");
    }

    pub(super) fn run(wanted: &[&str]) {
        let rounds: u32 = env_or("BENCH_ROUNDS", 5).max(1);
        let secs: f64 = env_or("BENCH_SECS", 1.0f64).max(0.05);
        let want = |f: &str| wanted.is_empty() || wanted.contains(&f);
        if want("milenage") {
            let m = Milenage::with_opc(&[0x46; 16], &[0xcd; 16]);
            let mut rand = [0x23u8; 16];
            let cached = best(rounds, secs, 1024, || {
                for _ in 0..1024 {
                    rand[0] = rand[0].wrapping_add(1);
                    black_box(m.compute(black_box(&rand), &[0, 0, 0, 0, 0, 0x22], &[0x80, 0]));
                }
            });
            line("milenage_vectors_per_s_cached_key", cached, "");
            let setup = best(rounds, secs, 1024, || {
                for _ in 0..1024 {
                    rand[0] = rand[0].wrapping_add(1);
                    let m = Milenage::with_opc(black_box(&[0x46; 16]), &[0xcd; 16]);
                    black_box(m.compute(black_box(&rand), &[0, 0, 0, 0, 0, 0x22], &[0x80, 0]));
                }
            });
            line("milenage_vectors_per_s_key_setup", setup, "");
        }
        if want("kasumi") {
            let octets: usize = env_or("BENCH_F8_OCTETS", 1523usize).clamp(8, 1 << 20);
            let uea1 = Uea1::new(&[9; 16]);
            let mut buf = vec![0x5au8; octets];
            let mut count = 0u32;
            let per_s = best(rounds, secs, 16, || {
                for _ in 0..16 {
                    count = count.wrapping_add(1);
                    uea1.apply(count, 2, Direction::Uplink, black_box(&mut buf), octets * 8)
                        .unwrap_or_else(|e| panic!("f8 over {octets} octets: {e}"));
                }
            });
            line(
                "kasumi_f8_mb_per_s",
                per_s * octets as f64 / 1e6,
                &format!(",\"octets\":{octets}"),
            );
            let k = Kasumi::new(&[3; 16]);
            let mut x = 1u64;
            let chained = best(rounds, secs, 4096, || {
                for _ in 0..4096 {
                    x = k.encrypt_u64(black_box(x));
                }
            });
            line("kasumi_ns_per_block_chained", 1e9 / chained, "");
            let mut x4 = [1u64, 2, 3, 4];
            let independent = best(rounds, secs, 4096, || {
                for _ in 0..1024 {
                    x4 = k.encrypt_x4(black_box(x4));
                }
            });
            line("kasumi_ns_per_block_4_independent", 1e9 / independent, "");
        }
        if want("token") {
            let TokenFixture {
                pki: p,
                verifier,
                signed,
                ..
            } = token_fixture();
            let ec = p
                .head_end
                .public_key()
                .and_then(|k| k.ec_key())
                .unwrap_or_else(|e| panic!("bench key: {e}"));
            let digest = openssl::sha::sha256(&signed.0.body);
            let sig = openssl::ecdsa::EcdsaSig::from_der(&signed.0.signature)
                .unwrap_or_else(|e| panic!("bench signature: {e}"));
            // Alternated round by round, so both see the same load.
            let (mut tok, mut raw) = (0f64, 0f64);
            for _ in 0..rounds {
                tok = tok.max(best(1, secs, 1, || {
                    verifier
                        .verify(black_box(&signed), "04123456789", pki::NOW)
                        .unwrap_or_else(|e| panic!("bench verify: {e}"));
                }));
                raw = raw.max(best(1, secs, 1, || {
                    assert!(sig.verify(black_box(&digest), &ec).unwrap_or(false));
                }));
            }
            line("token_verifications_per_s", tok, "");
            line("raw_ecdsa_p256_verifications_per_s", raw, "");
        }
    }
}
