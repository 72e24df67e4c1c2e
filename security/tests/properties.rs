//! Properties of the ciphers and MACs over arbitrary bit lengths.

use concentrator_security::bits::Direction;
use concentrator_security::{Eea2, Eia2, Uea1, Uia1};
use proptest::prelude::*;

fn dir(b: bool) -> Direction {
    if b {
        Direction::Downlink
    } else {
        Direction::Uplink
    }
}

fn masked(data: &[u8], bits: usize) -> Vec<u8> {
    let mut v = data[..bits.div_ceil(8)].to_vec();
    if !bits.is_multiple_of(8) {
        let n = v.len() - 1;
        v[n] &= 0xffu8 << (8 - bits % 8);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// f8 applied twice is the identity on the first LENGTH bits, for UEA1 and EEA2.
    #[test]
    fn f8_round_trip(key in any::<[u8; 16]>(), count in any::<u32>(), bearer in 0u8..32, down in any::<bool>(),
                     data in proptest::collection::vec(any::<u8>(), 1..300), cut in 0usize..8) {
        let bits = (data.len() * 8).saturating_sub(cut);
        for kasumi in [false, true] {
            let mut buf = data.clone();
            let run = |b: &mut [u8]| if kasumi {
                Uea1::new(&key).apply(count, bearer, dir(down), b, bits)
            } else {
                Eea2::new(&key).apply(count, bearer, dir(down), b, bits)
            };
            run(&mut buf).unwrap();
            run(&mut buf).unwrap();
            prop_assert_eq!(masked(&buf, bits), masked(&data, bits));
        }
    }

    /// Flipping any bit inside LENGTH changes the f9 MAC; bits past LENGTH do not matter.
    #[test]
    fn f9_detects_any_flipped_bit(key in any::<[u8; 16]>(), count in any::<u32>(), fresh in any::<u32>(), bearer in 0u8..32,
                                  down in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 1..100),
                                  cut in 0usize..8, pick in any::<prop::sample::Index>()) {
        let bits = (data.len() * 8 - cut).max(1);
        let i = pick.index(bits);
        let mut flipped = data.clone();
        flipped[i / 8] ^= 0x80 >> (i % 8);
        let uia1 = Uia1::new(&key);
        let eia2 = Eia2::new(&key);
        let u = |d: &[u8]| uia1.mac(count, fresh, dir(down), d, bits).unwrap();
        let e = |d: &[u8]| eia2.mac(count, bearer, dir(down), d, bits).unwrap();
        prop_assert_ne!(u(&data), u(&flipped));
        prop_assert_ne!(e(&data), e(&flipped));
        if cut > 0 && !bits.is_multiple_of(8) {
            let mut tail = data.clone();
            let last = tail.len() - 1;
            tail[last] ^= 1;
            prop_assert_eq!(u(&data), u(&tail));
            prop_assert_eq!(e(&data), e(&tail));
        }
    }
}

#[test]
fn short_buffers_and_bad_bearers_are_errors_not_panics() {
    let k = [0u8; 16];
    assert!(Uea1::new(&k)
        .apply(0, 0, Direction::Uplink, &mut [0; 2], 17)
        .is_err());
    assert!(Eea2::new(&k)
        .apply(0, 32, Direction::Uplink, &mut [0; 2], 16)
        .is_err());
    assert!(Uia1::new(&k)
        .mac(0, 0, Direction::Uplink, &[0; 2], 17)
        .is_err());
    assert!(Eia2::new(&k)
        .mac(0, 0, Direction::Uplink, &[0; 2], 17)
        .is_err());
    // Zero-length messages are fine.
    assert!(Eia2::new(&k).mac(0, 0, Direction::Uplink, &[], 0).is_ok());
    assert!(Uia1::new(&k).mac(0, 0, Direction::Uplink, &[], 0).is_ok());
}

#[test]
fn f8_batch_equals_one_by_one() {
    use concentrator_security::uea1_uia1::F8Job;
    let keys: Vec<Uea1> = (0..11u8).map(|i| Uea1::new(&[i; 16])).collect();
    let lens: Vec<usize> = (0..11).map(|i| 1 + i * 37).collect();
    let mut bufs: Vec<Vec<u8>> = lens
        .iter()
        .map(|&l| vec![0xa7; l.div_ceil(8) + 1])
        .collect();
    let mut expected = bufs.clone();
    for (i, e) in expected.iter_mut().enumerate() {
        keys[i]
            .apply(i as u32, i as u8, Direction::Downlink, e, lens[i])
            .unwrap();
    }
    let mut jobs: Vec<F8Job<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| F8Job {
            key: &keys[i],
            count: i as u32,
            bearer: i as u8,
            direction: Direction::Downlink,
            buf: b,
            length_bits: lens[i],
        })
        .collect();
    Uea1::apply_batch(&mut jobs).unwrap();
    assert_eq!(bufs, expected);
}
