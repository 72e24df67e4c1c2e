//! The account steps every phone-facing front end shares (this crate's framed server and the
//! head-end's web app): registration with the authorization code, the next AKA challenge with the SQN
//! saved first, and the password check that takes the same time whether or not the customer exists.

use std::sync::Mutex;

use concentrator_security::aka::{self, AuthVector};
use concentrator_security::Milenage;

use crate::backend::{Backend, BackendError, Customer};
use crate::message::ErrorCode;
use crate::password;

/// AMF of the challenges (the separation bit set, as for the gateway's meters).
pub const AMF: [u8; 2] = [0x80, 0x00];

/// Why no challenge could be made.
#[derive(Debug)]
pub enum ChallengeError {
    /// The payment server failed.
    Backend(BackendError),
    /// The AUTS of a resynchronisation did not verify.
    BadAuts,
}

impl From<BackendError> for ChallengeError {
    fn from(e: BackendError) -> Self {
        ChallengeError::Backend(e)
    }
}

/// A registration refused for a reason the customer can act on.
pub type Refusal = (ErrorCode, String);

/// Registers the customer holding `code` as `user` with `pass`: new K and OPc, the password hashed, the
/// code used up, all in one write under `accounts`. `Ok(Err(_))`: refused (unknown or used code, name
/// taken); the caller answers it as a failed attempt.
pub fn register(
    backend: &dyn Backend,
    accounts: &Mutex<()>,
    code: &str,
    user: &str,
    pass: &str,
) -> Result<Result<Customer, Refusal>, BackendError> {
    let _accounts = accounts.lock().unwrap_or_else(|p| p.into_inner());
    let refused = || {
        Ok(Err((
            ErrorCode::CodeRefused,
            "the authorization code is unknown or already used; ask the bank counter for a new one"
                .to_owned(),
        )))
    };
    let Some(mut c) = backend.customer_by_auth_code(code)? else {
        return refused();
    };
    if c.user.is_some() {
        return refused();
    }
    if let Some(other) = backend.customer_by_user(user)? {
        if other.id != c.id {
            return Ok(Err((
                ErrorCode::UserTaken,
                format!("the user name {user:?} is taken; choose another"),
            )));
        }
    }
    let hash = password::hash(pass).map_err(|e| BackendError::Unavailable(e.to_string()))?;
    let mut k = [0u8; 16];
    let mut opc = [0u8; 16];
    openssl::rand::rand_bytes(&mut k)
        .and_then(|()| openssl::rand::rand_bytes(&mut opc))
        .map_err(|e| BackendError::Unavailable(format!("random number generator: {e}")))?;
    c.user = Some(user.to_owned());
    c.password_hash = Some(hash);
    c.k = Some(k);
    c.opc = Some(opc);
    backend.save_customer(&c, Some(code))?;
    Ok(Ok(c))
}

/// Under `accounts`: re-reads the customer, resynchronises on `auts` if given, takes the next SQN and
/// saves (flushed) before the vector is returned to be sent.
pub fn challenge(
    backend: &dyn Backend,
    accounts: &Mutex<()>,
    imsi: &str,
    auts: Option<(&[u8; 16], &[u8; 14])>,
) -> Result<AuthVector, ChallengeError> {
    let _accounts = accounts.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = backend.customer_by_imsi(imsi)?.ok_or_else(|| {
        BackendError::NotFound(format!("customer with IMSI {imsi} vanished during login"))
    })?;
    let (Some(k), Some(opc)) = (c.k, c.opc) else {
        return Err(
            BackendError::NotFound(format!("customer {} has no AKA credentials", c.id)).into(),
        );
    };
    let m = Milenage::with_opc(&k, &opc);
    if let Some((rand, auts)) = auts {
        aka::resynchronise(&m, &mut c.sqn, rand, auts).map_err(|_| ChallengeError::BadAuts)?;
    }
    let mut rand = [0u8; 16];
    openssl::rand::rand_bytes(&mut rand)
        .map_err(|e| BackendError::Unavailable(format!("random number generator: {e}")))?;
    let vector = aka::generate_vector(&m, &mut c.sqn, rand, AMF)
        .map_err(|e| BackendError::Unavailable(e.to_string()))?;
    backend.save_customer(&c, None)?;
    Ok(vector)
}

/// Whether `pass` is the stored password; with no stored hash a dummy one is checked, so the time
/// does not tell whether the customer exists.
pub fn password_ok(stored: Option<&Customer>, pass: &str) -> bool {
    let hash = stored
        .and_then(|c| c.password_hash.clone())
        .unwrap_or_else(password::dummy);
    pass.len() <= password::MAX_PASSWORD_LEN
        && password::verify(pass, &hash).unwrap_or_else(|e| {
            log::error!("password check: {e}");
            false
        })
        && stored.is_some_and(|c| c.password_hash.is_some())
}

/// An all-digit login identity of IMSI length is an IMSI; anything else a user name.
pub fn is_imsi(identity: &str) -> bool {
    (6..=15).contains(&identity.len()) && identity.bytes().all(|b| b.is_ascii_digit())
}

/// User names: 1–64 of `A-Z a-z 0-9 . _ -` (they are the envelope's sender), not all digits (an
/// all-digit login identity is an IMSI).
pub fn check_user_name(user: &str) -> Result<(), String> {
    let ok_chars = user
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if user.is_empty() || user.len() > 64 || !ok_chars {
        return Err(format!(
            "user name {user:?} is not valid: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    if user.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "user name {user:?} is all digits, which is how IMSIs log in: add a letter"
        ));
    }
    Ok(())
}

/// The password rule of registration, as the customer reads it when it is broken.
pub fn check_password_rule(pass: &str) -> Result<(), String> {
    if pass.chars().count() < password::MIN_PASSWORD_CHARS
        || pass.len() > password::MAX_PASSWORD_LEN
    {
        return Err(format!(
            "the password must have at least {} characters and at most {} octets",
            password::MIN_PASSWORD_CHARS,
            password::MAX_PASSWORD_LEN
        ));
    }
    Ok(())
}
