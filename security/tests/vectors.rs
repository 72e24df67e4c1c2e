//! Every entry of the 3GPP test data (tests/fixtures/3gpp.json, a copy of shared/vectors/3gpp.json) run
//! through the library, one test per entry; `every_entry_has_a_test` fails if the file grows.

mod common;

use common::{arr, count, entry, first_bits, hx, int, u32_field};
use concentrator_security::bits::Direction;
use concentrator_security::milenage::opc_from_op;
use concentrator_security::suci::{self, Profile};
use concentrator_security::{Eea2, Eia2, Kasumi, Milenage, Uea1, Uia1};

fn dir(v: &serde_json::Value) -> Direction {
    Direction::from_bit(int(v, "direction") as u8).expect("direction 0 or 1")
}

fn milenage_set(category: &str, i: usize) {
    let v = entry(category, i);
    let k = arr::<16>(v, "K");
    let opc = arr::<16>(v, "OPc");
    assert_eq!(opc_from_op(&k, &arr(v, "OP")), opc, "OPc");
    let m = Milenage::with_op(&k, &arr(v, "OP"));
    assert_eq!(m.opc(), opc);
    let (rand, sqn, amf) = (arr::<16>(v, "RAND"), arr::<6>(v, "SQN"), arr::<2>(v, "AMF"));
    let o = m.compute(&rand, &sqn, &amf);
    assert_eq!(o.mac_a.to_vec(), hx(v, "f1"), "f1");
    assert_eq!(o.mac_s.to_vec(), hx(v, "f1star"), "f1*");
    assert_eq!(o.res.to_vec(), hx(v, "f2"), "f2");
    assert_eq!(o.ck.to_vec(), hx(v, "f3"), "f3");
    assert_eq!(o.ik.to_vec(), hx(v, "f4"), "f4");
    assert_eq!(o.ak.to_vec(), hx(v, "f5"), "f5");
    assert_eq!(o.ak_star.to_vec(), hx(v, "f5star"), "f5*");
    assert_eq!(m.f5(&rand).to_vec(), hx(v, "f5"));
    assert_eq!(m.f5_star(&rand).to_vec(), hx(v, "f5star"));
    assert_eq!(m.f1(&rand, &sqn, &amf), (o.mac_a, o.mac_s));
    if v.get("derived_AUTN_SQNxorAK_AMF_MACA").is_some() {
        assert_eq!(
            o.autn(&sqn, &amf).to_vec(),
            hx(v, "derived_AUTN_SQNxorAK_AMF_MACA"),
            "AUTN"
        );
    }
    // The same through an OPc-keyed instance.
    assert_eq!(Milenage::with_opc(&k, &opc).compute(&rand, &sqn, &amf), o);
}

fn aka_set(i: usize) {
    let v = entry("aka_autn_auts", i);
    let k = arr::<16>(v, "K");
    if v.get("RAND").is_none() {
        assert_eq!(opc_from_op(&k, &arr(v, "OP")).to_vec(), hx(v, "OPc"));
        return;
    }
    let m = Milenage::with_opc(&k, &arr(v, "OPc"));
    let rand = arr::<16>(v, "RAND");
    if v.get("AUTS").is_some() {
        let sqn_ms = arr::<6>(v, "SQN_MS");
        assert_eq!(m.f5_star(&rand).to_vec(), hx(v, "AK_star"));
        let auts = m.auts(&rand, &sqn_ms);
        assert_eq!(auts.to_vec(), hx(v, "AUTS"));
        assert_eq!(auts[6..].to_vec(), hx(v, "MAC_S"));
        assert_eq!(m.verify_auts(&rand, &auts), Some(sqn_ms));
        let mut bad = auts;
        bad[13] ^= 1;
        assert_eq!(m.verify_auts(&rand, &bad), None);
        return;
    }
    let (sqn, amf) = (arr::<6>(v, "SQN"), arr::<2>(v, "AMF"));
    let o = m.compute(&rand, &sqn, &amf);
    assert_eq!(o.autn(&sqn, &amf).to_vec(), hx(v, "AUTN"));
    assert_eq!(o.ik.to_vec(), hx(v, "IK"));
    assert_eq!(o.ck.to_vec(), hx(v, "CK"));
    assert_eq!(o.res.to_vec(), hx(v, "RES"));
}

fn kasumi_set(i: usize) {
    let v = entry("kasumi", i);
    let k = Kasumi::new(&arr(v, "key"));
    let mut block = arr::<8>(v, "plaintext");
    for _ in 0..int(v, "iterations") {
        block = k.encrypt_block(&block);
    }
    assert_eq!(block.to_vec(), hx(v, "ciphertext"));
}

fn f8_set(category: &str, i: usize) {
    let v = entry(category, i);
    let bits = int(v, "length_bits") as usize;
    let (count, bearer) = (u32_field(v, "count"), int(v, "bearer") as u8);
    let plain = hx(v, "plaintext");
    let mut buf = plain.clone();
    let key = arr::<16>(v, "key");
    let run = |buf: &mut [u8]| match category {
        "uea1_f8" => Uea1::new(&key).apply(count, bearer, dir(v), buf, bits),
        _ => Eea2::new(&key).apply(count, bearer, dir(v), buf, bits),
    };
    run(&mut buf).unwrap();
    assert_eq!(
        first_bits(&buf, bits),
        first_bits(&hx(v, "ciphertext"), bits),
        "ciphertext"
    );
    run(&mut buf).unwrap();
    assert_eq!(
        first_bits(&buf, bits),
        first_bits(&plain, bits),
        "decrypts back"
    );
}

fn f9_set(category: &str, i: usize) {
    let v = entry(category, i);
    let bits = int(v, "length_bits") as usize;
    let key = arr::<16>(v, "key");
    let count = u32_field(v, "count");
    let msg = hx(v, "message");
    let (mac, expected) = match category {
        "uia1_f9" => (
            Uia1::new(&key).mac(count, u32_field(v, "fresh"), dir(v), &msg, bits),
            hx(v, "mac_i"),
        ),
        _ => (
            Eia2::new(&key).mac(count, int(v, "bearer") as u8, dir(v), &msg, bits),
            hx(v, "mac"),
        ),
    };
    assert_eq!(mac.unwrap().to_vec(), expected);
}

fn suci_set(i: usize) {
    let v = entry("suci_ecies", i);
    let Some(profile) = v["profile"].as_str() else {
        // Null scheme: the scheme output is the scheme input, the BCD-coded MSIN.
        let msin = v["msin"].as_str().unwrap();
        assert_eq!(suci::msin_to_bcd(msin).unwrap(), hx(v, "scheme_output"));
        assert_eq!(hx(v, "scheme_input"), hx(v, "scheme_output"));
        return;
    };
    let profile = if profile == "A" {
        Profile::A
    } else {
        Profile::B
    };
    let msin = v["msin"].as_str().unwrap();
    let plain = suci::msin_to_bcd(msin).unwrap();
    assert_eq!(plain, hx(v, "plaintext"));
    let (out, keys) =
        suci::conceal_with_ephemeral(profile, &hx(v, "hn_pub"), &hx(v, "eph_priv"), &plain)
            .unwrap();
    assert_eq!(keys.eph_public, hx(v, "eph_pub"));
    assert_eq!(keys.shared, hx(v, "shared"));
    assert_eq!(keys.enc_key.to_vec(), hx(v, "enc_key"));
    assert_eq!(keys.icb.to_vec(), hx(v, "icb"));
    assert_eq!(keys.mac_key.to_vec(), hx(v, "mac_key"));
    assert_eq!(out, hx(v, "scheme_output"));
    let pk = profile.public_key_len();
    assert_eq!(out[pk..pk + plain.len()].to_vec(), hx(v, "ciphertext"));
    assert_eq!(out[pk + plain.len()..].to_vec(), hx(v, "mac_tag"));
    let revealed = suci::reveal(profile, &hx(v, "hn_priv"), &out).unwrap();
    assert_eq!(suci::bcd_to_msin(&revealed).unwrap(), msin);
    if v.get("hn_pub_uncompressed").is_some() {
        let (out2, _) = suci::conceal_with_ephemeral(
            profile,
            &hx(v, "hn_pub_uncompressed"),
            &hx(v, "eph_priv"),
            &plain,
        )
        .unwrap();
        assert_eq!(
            out2, out,
            "uncompressed home-network key gives the same output"
        );
    }
    let mut tampered = out.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(matches!(
        suci::reveal(profile, &hx(v, "hn_priv"), &tampered),
        Err(suci::SuciError::BadMac)
    ));
}

macro_rules! tests {
    ($($name:ident => $call:expr;)*) => {
        $(#[test] fn $name() { $call; })*
        /// The number of generated tests per category, checked against the file.
        const GENERATED: &[&str] = &[$(stringify!($name)),*];
    };
}

tests! {
    milenage_0 => milenage_set("milenage", 0);
    milenage_1 => milenage_set("milenage", 1);
    milenage_2 => milenage_set("milenage", 2);
    milenage_3 => milenage_set("milenage", 3);
    milenage_4 => milenage_set("milenage", 4);
    milenage_5 => milenage_set("milenage", 5);
    milenage_35207_0 => milenage_set("milenage_35207", 0);
    milenage_35207_1 => milenage_set("milenage_35207", 1);
    milenage_35207_2 => milenage_set("milenage_35207", 2);
    milenage_35207_3 => milenage_set("milenage_35207", 3);
    milenage_35207_4 => milenage_set("milenage_35207", 4);
    milenage_35207_5 => milenage_set("milenage_35207", 5);
    aka_autn_auts_0 => aka_set(0);
    aka_autn_auts_1 => aka_set(1);
    aka_autn_auts_2 => aka_set(2);
    kasumi_0 => kasumi_set(0);
    kasumi_1 => kasumi_set(1);
    uea1_f8_0 => f8_set("uea1_f8", 0);
    uea1_f8_1 => f8_set("uea1_f8", 1);
    uea1_f8_2 => f8_set("uea1_f8", 2);
    uia1_f9_0 => f9_set("uia1_f9", 0);
    uia1_f9_1 => f9_set("uia1_f9", 1);
    uia1_f9_2 => f9_set("uia1_f9", 2);
    eea2_0 => f8_set("eea2", 0);
    eea2_1 => f8_set("eea2", 1);
    eea2_2 => f8_set("eea2", 2);
    eia2_0 => f9_set("eia2", 0);
    eia2_1 => f9_set("eia2", 1);
    eia2_2 => f9_set("eia2", 2);
    eia2_3 => f9_set("eia2", 3);
    suci_ecies_0 => suci_set(0);
    suci_ecies_1 => suci_set(1);
    suci_ecies_2 => suci_set(2);
}

#[test]
fn every_entry_has_a_test() {
    let categories = common::vectors()["vectors"].as_object().unwrap();
    for (name, list) in categories {
        let n = list.as_array().unwrap().len();
        for i in 0..n {
            let test = format!("{name}_{i}");
            assert!(
                GENERATED.contains(&test.as_str()),
                "entry {name}[{i}] has no test {test}"
            );
        }
        assert_eq!(count(name), n);
    }
    let total: usize = categories
        .values()
        .map(|l| l.as_array().unwrap().len())
        .sum();
    assert_eq!(
        total,
        GENERATED.len(),
        "a test names an entry that does not exist"
    );
}
