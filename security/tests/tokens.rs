//! Credit tokens and receipts across the test PKI: each refusal has its own error.

mod common;

use common::pki::{cert, p256_key, TestPki, NOW};
use concentrator_security::clock::LocalTime;
use concentrator_security::receipt::{Receipt, ReceiptError, ReceiptVerifier};
use concentrator_security::signed::DocumentSigner;
use concentrator_security::token::{
    CreditToken, SignedToken, TokenError, TokenSigner, TokenVerifier, ISSUED_AT_TOLERANCE_S,
};

fn token() -> CreditToken {
    CreditToken {
        meter_id: "04123456789".into(),
        serial: 42,
        amount_minor: 20_00,
        currency: *b"EUR",
        issued_at: NOW - 60,
        expires_at: NOW + 30 * 86_400,
        key_id: [0; 8],
    }
}

fn setup() -> (TestPki, TokenSigner, TokenVerifier) {
    let pki = TestPki::new();
    let signer = TokenSigner::new(
        DocumentSigner::new(
            pki.head_end_key.clone(),
            std::slice::from_ref(&pki.head_end),
        )
        .unwrap(),
    );
    let verifier = TokenVerifier::new(vec![pki.ca.clone()]);
    (pki, signer, verifier)
}

#[test]
fn a_good_token_verifies_after_a_round_trip() {
    let (_pki, signer, verifier) = setup();
    let signed = signer.sign(&token()).unwrap();
    let wire = signed.encode().unwrap();
    let back = SignedToken::decode(&wire).unwrap();
    let t = verifier.verify(&back, "04123456789", NOW).unwrap();
    assert_eq!(t.key_id, signer.key_id());
    assert_eq!(
        CreditToken {
            key_id: [0; 8],
            ..t
        },
        token()
    );
    // A second verification takes the cached chain and still checks everything.
    assert!(verifier.verify(&back, "04123456789", NOW).is_ok());
}

#[test]
fn each_refusal_has_its_own_error() {
    let (pki, signer, verifier) = setup();
    let signed = signer.sign(&token()).unwrap();

    assert!(matches!(
        verifier.verify(&signed, "04999999999", NOW),
        Err(TokenError::WrongMeter { .. })
    ));
    assert!(matches!(
        verifier.verify(&signed, "04123456789", NOW + 31 * 86_400),
        Err(TokenError::Expired { .. })
    ));
    assert!(matches!(
        verifier.verify(&signed, "04123456789", NOW - 3600),
        Err(TokenError::NotYetValid { .. })
    ));

    // Altered amount: the signature no longer matches.
    let mut altered = signed.clone();
    let pos = altered.0.body.len() - 8 - 8 - 8 - 3 - 1;
    altered.0.body[pos] ^= 1;
    assert_eq!(
        verifier.verify(&altered, "04123456789", NOW),
        Err(TokenError::BadSignature)
    );

    // A head-end certificate from a rogue CA.
    let rogue = TokenSigner::new(
        DocumentSigner::new(
            pki.rogue_head_end_key.clone(),
            std::slice::from_ref(&pki.rogue_head_end),
        )
        .unwrap(),
    );
    match verifier.verify(&rogue.sign(&token()).unwrap(), "04123456789", NOW) {
        Err(TokenError::UntrustedChain { issuer, .. }) => {
            assert!(issuer.contains("Rogue CA"), "{issuer}")
        }
        other => panic!("expected UntrustedChain, got {other:?}"),
    }

    // A gateway key cannot mint credit even though it chains to the utility CA.
    let gw = TokenSigner::new(
        DocumentSigner::new(pki.gateway_key.clone(), std::slice::from_ref(&pki.gateway)).unwrap(),
    );
    assert!(matches!(
        verifier.verify(&gw.sign(&token()).unwrap(), "04123456789", NOW),
        Err(TokenError::NotHeadEnd { .. })
    ));

    // A key id that is not the signer's.
    let mut t = token();
    t.key_id = [9; 8];
    let body = t.encode().unwrap();
    let doc = DocumentSigner::new(
        pki.head_end_key.clone(),
        std::slice::from_ref(&pki.head_end),
    )
    .unwrap()
    .sign(body)
    .unwrap();
    assert!(matches!(
        verifier.verify(&SignedToken(doc), "04123456789", NOW),
        Err(TokenError::KeyIdMismatch { .. })
    ));

    // An expired head-end certificate makes the chain untrusted.
    let old_key = p256_key();
    let old = cert(
        "old-head-end",
        "head-end",
        &old_key,
        Some((&pki.ca, &pki.ca_key)),
        false,
        NOW - 1000,
        NOW - 10,
    );
    let old_signer = TokenSigner::new(DocumentSigner::new(old_key, &[old]).unwrap());
    assert!(matches!(
        verifier.verify(&old_signer.sign(&token()).unwrap(), "04123456789", NOW),
        Err(TokenError::UntrustedChain { .. })
    ));

    // Truncation is a Malformed error with an offset.
    let wire = signed.encode().unwrap();
    assert!(matches!(
        SignedToken::decode(&wire[..wire.len() - 1]),
        Err(TokenError::Malformed { .. })
    ));
    assert!(matches!(
        CreditToken::decode(&signed.0.body[..20]),
        Err(TokenError::Malformed {
            what: "serial",
            offset: 14
        })
    ));
}

/// A gateway without a real-time clock may be behind the head-end: a token issued up to the tolerance in
/// the future of its clock verifies; beyond, it is refused as the clock's fault, to be retried.
#[test]
fn a_clock_behind_the_head_end_by_less_than_the_tolerance_still_verifies() {
    let (pki, signer, verifier) = setup();
    let issued = |issued_at: u64| {
        signer
            .sign(&CreditToken {
                issued_at,
                ..token()
            })
            .unwrap()
    };
    // Failed before: refused as not yet valid at one second behind.
    assert!(verifier
        .verify(&issued(NOW + 1), "04123456789", NOW)
        .is_ok());
    assert!(verifier
        .verify(&issued(NOW + 120), "04123456789", NOW)
        .is_ok());
    assert_eq!(ISSUED_AT_TOLERANCE_S, 300);
    assert!(verifier
        .verify(&issued(NOW + ISSUED_AT_TOLERANCE_S), "04123456789", NOW)
        .is_ok());

    let beyond = verifier
        .verify(&issued(NOW + ISSUED_AT_TOLERANCE_S + 1), "04123456789", NOW)
        .unwrap_err();
    assert!(matches!(beyond, TokenError::NotYetValid { .. }), "{beyond}");
    assert!(beyond.retry_later());
    let text = beyond.to_string();
    assert!(
        // In the machine's local time (clock::LocalTime, tested in every zone in its unit tests).
        text.contains(&LocalTime(NOW + ISSUED_AT_TOLERANCE_S + 1).to_string())
            && text.contains(&format!(
                "301 s after this device's clock ({})",
                LocalTime(NOW)
            ))
            && text.contains("more than the 300 s")
            && text.contains("set it")
            && !text.contains(&NOW.to_string()),
        "{text}"
    );

    // Expiry has no tolerance: valid until the second before, refused at it, and that is final.
    let signed = signer.sign(&token()).unwrap();
    let expires_at = token().expires_at;
    assert!(verifier
        .verify(&signed, "04123456789", expires_at - 1)
        .is_ok());
    let expired = verifier
        .verify(&signed, "04123456789", expires_at)
        .unwrap_err();
    assert!(matches!(expired, TokenError::Expired { .. }), "{expired}");
    assert!(!expired.retry_later());
    assert!(
        expired
            .to_string()
            .contains(&LocalTime(expires_at).to_string()),
        "{expired}"
    );

    // A signer certificate that is not valid yet by this clock: also the clock's fault.
    let young_key = p256_key();
    let young = cert(
        "young-head-end",
        "head-end",
        &young_key,
        Some((&pki.ca, &pki.ca_key)),
        false,
        NOW + 10,
        NOW + 86_400,
    );
    let young_signer = TokenSigner::new(DocumentSigner::new(young_key, &[young]).unwrap());
    let e = verifier
        .verify(&young_signer.sign(&token()).unwrap(), "04123456789", NOW)
        .unwrap_err();
    assert!(matches!(e, TokenError::UntrustedChain { .. }), "{e}");
    assert!(e.retry_later(), "{e}");
    // A wrong meter is the token's fault.
    assert!(!verifier
        .verify(&signed, "04999999999", NOW)
        .unwrap_err()
        .retry_later());
}

#[test]
fn signer_rejects_a_key_that_does_not_match_its_certificate() {
    let pki = TestPki::new();
    assert!(
        DocumentSigner::new(pki.gateway_key.clone(), std::slice::from_ref(&pki.head_end)).is_err()
    );
    assert!(DocumentSigner::new(pki.gateway_key.clone(), &[]).is_err());
}

#[test]
fn receipts_are_signed_by_gateways_only() {
    let pki = TestPki::new();
    let receipt = Receipt {
        meter_id: "04123456789".into(),
        serial: 42,
        amount_minor: 2000,
        currency: *b"EUR",
        applied_at: NOW,
        balance_after_minor: -150,
        gateway_id: "gw-0001".into(),
    };
    let gw =
        DocumentSigner::new(pki.gateway_key.clone(), std::slice::from_ref(&pki.gateway)).unwrap();
    let signed = receipt.sign(&gw).unwrap();
    let verifier = ReceiptVerifier::new(vec![pki.ca.clone()]);
    assert_eq!(verifier.verify(&signed, NOW).unwrap(), receipt);
    let he = DocumentSigner::new(
        pki.head_end_key.clone(),
        std::slice::from_ref(&pki.head_end),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&receipt.sign(&he).unwrap(), NOW),
        Err(ReceiptError::Signer(_))
    ));
    let mut altered = signed.clone();
    *altered.body.last_mut().unwrap() ^= 0x02;
    assert!(matches!(
        verifier.verify(&altered, NOW),
        Err(ReceiptError::BadSignature)
    ));
}
