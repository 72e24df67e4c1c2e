//! Benchmarks of the security core: `cargo bench -p concentrator-security` (a few seconds per figure).
//!
//! Figures reported in docs/security.md: Milenage vectors per second, KASUMI f8/f9 and EEA2 throughput,
//! EIA2 MACs per second on 64-octet messages, token verifications per second; plus the AES per-call cost
//! of the `aes` crate against openssl's EVP interface, which decided the AES backend.

#[path = "../tests/common/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::hint::black_box;
use std::time::Duration;

use concentrator_security::aes128::Aes128Key;
use concentrator_security::bits::Direction;
use concentrator_security::signed::DocumentSigner;
use concentrator_security::token::{CreditToken, TokenSigner, TokenVerifier};
use concentrator_security::uea1_uia1::F8Job;
use concentrator_security::{Eea2, Eia2, Kasumi, Milenage, Uea1, Uia1};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
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

fn tokens(c: &mut Criterion) {
    let mut g = quick(c);
    g.throughput(Throughput::Elements(1));
    let p = pki::TestPki::new();
    let signer = TokenSigner::new(
        DocumentSigner::new(p.head_end_key.clone(), std::slice::from_ref(&p.head_end)).unwrap(),
    );
    let verifier = TokenVerifier::new(vec![p.ca.clone()]);
    let token = CreditToken {
        meter_id: "04123456789".into(),
        serial: 1,
        amount_minor: 1000,
        currency: *b"EUR",
        issued_at: pki::NOW - 10,
        expires_at: pki::NOW + 1000,
        key_id: [0; 8],
    };
    let signed = signer.sign(&token).unwrap();
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
criterion_main!(benches);
