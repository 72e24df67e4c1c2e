//! Top-up application.
//!
//! A token is checked in this order: it parses; if this very token (same octets) was applied before, the
//! original receipt is returned with [`TopUpError::Replayed`] and nothing changes; the security crate
//! verifies chain, role, signature, key id, meter binding and validity period; the meter has an account
//! here; the currency is the ledger's; the serial was not applied before (a different token with an
//! applied serial is a [`TopUpError::SerialConflict`], a serial the head-end's restore statement lists is
//! [`TopUpError::AppliedBeforeRestore`]). Serials may arrive in any order: the ledger remembers every
//! serial it applied (one token record per meter and serial), not only the highest, so a late token
//! still applies once and a replay never does (docs/ledger.md, *Token serials*). Then, in one transaction:
//! the serial and the token's digest are recorded, the credit is added, debt is recovered (a share of the
//! top-up), the audit entry is appended, a receipt signed with the gateway key goes into the outbox, and
//! the relay policy runs (a reconnect). The store is flushed; only then is the receipt returned.
//!
//! [`Ledger::apply_tokens`] does the same for several tokens with one commit and one flush (group commit).

use concentrator_security::receipt::Receipt;
use concentrator_security::restore::SerialSpan;
use concentrator_security::{CreditToken, SignedToken};

use crate::account::LastTopUp;
use crate::audit::AuditEvent;
use crate::config::DebtRecovery;
use crate::ledger::{Ledger, Txn};
use crate::money::share_of;
use crate::outbox::{OutboxKind, TopUpReceipt};
use crate::store::{Keyspace, Store};
use crate::{LedgerError, TopUpError};

/// The largest amount one token may carry (guards the i64 sums).
pub const MAX_TOKEN_AMOUNT: u64 = 1 << 40;

/// Key of an applied token: meter id, a zero octet, the serial big-endian.
pub fn token_key(meter: &str, serial: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(meter.len() + 9);
    k.extend_from_slice(meter.as_bytes());
    k.push(0);
    k.extend_from_slice(&serial.to_be_bytes());
    k
}

/// SHA-256 of a token's wire octets.
pub fn token_digest(signed_token: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(signed_token)
}

fn stored_receipt(key: &[u8], value: &[u8]) -> Result<([u8; 32], TopUpReceipt), LedgerError> {
    let corrupt = |reason: String| LedgerError::Corrupt {
        keyspace: Keyspace::Tokens.name(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    if value.len() < 32 {
        return Err(corrupt("shorter than a digest".into()));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&value[..32]);
    let receipt = TopUpReceipt::from_signed(value[32..].to_vec()).map_err(corrupt)?;
    Ok((digest, receipt))
}

impl<S: Store> Ledger<S> {
    /// Applies one token (wire octets of a [`SignedToken`]) to the meter it names. Returns only after the
    /// store has flushed the application.
    pub fn apply_token(
        &mut self,
        signed_token: &[u8],
        now: u64,
    ) -> Result<TopUpReceipt, TopUpError> {
        self.apply_tokens(&[signed_token], now)
            .pop()
            .unwrap_or_else(|| Err(LedgerError::Output("no result".into()).into()))
    }

    /// Applies a token that arrived for `meter` (in that meter's envelope, or named by the operator):
    /// a token for another meter is refused with [`concentrator_security::TokenError::WrongMeter`].
    pub fn apply_token_for(
        &mut self,
        meter: &str,
        signed_token: &[u8],
        now: u64,
    ) -> Result<TopUpReceipt, TopUpError> {
        self.flush_if_needed()?;
        let mut txn = self.begin();
        let result = self.stage_token(&mut txn, signed_token, Some(meter), now);
        self.finish_topups(txn, vec![result])
            .pop()
            .unwrap_or_else(|| Err(LedgerError::Output("no result".into()).into()))
    }

    /// Applies several tokens with one commit and one flush (group commit). Results are in input order;
    /// if the commit or flush fails, every token that would have been applied gets the error.
    pub fn apply_tokens(
        &mut self,
        signed_tokens: &[&[u8]],
        now: u64,
    ) -> Vec<Result<TopUpReceipt, TopUpError>> {
        let tokens: Vec<(Option<&str>, &[u8])> = signed_tokens.iter().map(|t| (None, *t)).collect();
        self.group_commit(&tokens, now)
    }

    /// [`Ledger::apply_token_for`] for several tokens, each with the meter it arrived for, with one
    /// commit and one flush (group commit: the daemon's ledger thread applies the top-up commands that
    /// queued up while it was busy this way). Results are in input order; if the commit or flush
    /// fails, every token that would have been applied gets the error.
    pub fn apply_tokens_for(
        &mut self,
        tokens: &[(&str, &[u8])],
        now: u64,
    ) -> Vec<Result<TopUpReceipt, TopUpError>> {
        let tokens: Vec<(Option<&str>, &[u8])> =
            tokens.iter().map(|(m, t)| (Some(*m), *t)).collect();
        self.group_commit(&tokens, now)
    }

    /// Stages every token (each for the meter it arrived for, if known) in one transaction, then one
    /// commit and one flush.
    fn group_commit(
        &mut self,
        tokens: &[(Option<&str>, &[u8])],
        now: u64,
    ) -> Vec<Result<TopUpReceipt, TopUpError>> {
        if let Err(e) = self.flush_if_needed() {
            return tokens.iter().map(|_| Err(e.clone())).collect();
        }
        let mut txn = self.begin();
        let staged = tokens
            .iter()
            .map(|(meter, t)| self.stage_token(&mut txn, t, *meter, now))
            .collect();
        self.finish_topups(txn, staged)
    }

    fn flush_if_needed(&mut self) -> Result<(), TopUpError> {
        if self.unflushed {
            self.flush()?;
        }
        Ok(())
    }

    fn finish_topups(
        &mut self,
        txn: Txn,
        staged: Vec<Result<TopUpReceipt, TopUpError>>,
    ) -> Vec<Result<TopUpReceipt, TopUpError>> {
        let any_new = staged.iter().any(Result::is_ok);
        if !any_new {
            return staged;
        }
        // A copy of a token staged in this batch is answered "replayed" with the receipt staged here:
        // that receipt exists only if the commit does.
        let staged_here: Vec<(String, u64)> = staged
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| (r.receipt.meter_id.clone(), r.receipt.serial))
            .collect();
        match self.finish(txn, true) {
            Ok(()) => staged,
            Err(e) => staged
                .into_iter()
                .map(|r| match r {
                    Ok(_) => Err(TopUpError::Ledger(e.clone())),
                    Err(TopUpError::Replayed {
                        ref meter, serial, ..
                    }) if staged_here.iter().any(|(m, s)| m == meter && *s == serial) => {
                        Err(TopUpError::Ledger(e.clone()))
                    }
                    other => other,
                })
                .collect(),
        }
    }

    fn stage_token(
        &self,
        txn: &mut Txn,
        bytes: &[u8],
        expected_meter: Option<&str>,
        now: u64,
    ) -> Result<TopUpReceipt, TopUpError> {
        let signed = SignedToken::decode(bytes)?;
        let claimed = CreditToken::decode(&signed.0.body)?;
        let key = token_key(&claimed.meter_id, claimed.serial);
        let digest = token_digest(bytes);
        let seen = match txn.tokens.get(&key) {
            Some(v) => Some(v.clone()),
            None => self
                .store
                .get(Keyspace::Tokens, &key)
                .map_err(LedgerError::from)?,
        };
        if let Some(value) = &seen {
            let (stored_digest, original) = stored_receipt(&key, value)?;
            if stored_digest == digest {
                return Err(TopUpError::Replayed {
                    meter: claimed.meter_id,
                    serial: claimed.serial,
                    original: Box::new(original),
                });
            }
        }
        let meter = expected_meter.unwrap_or(&claimed.meter_id);
        let token = self.verifier.verify(&signed, meter, now)?;
        if seen.is_some() {
            return Err(TopUpError::SerialConflict {
                meter: token.meter_id,
                serial: token.serial,
            });
        }
        let current = txn
            .touched
            .get(&token.meter_id)
            .or_else(|| self.accounts.get(&token.meter_id))
            .ok_or_else(|| TopUpError::UnknownMeter {
                meter: token.meter_id.clone(),
            })?;
        if token.currency != self.config.currency.as_bytes() {
            return Err(TopUpError::Currency {
                got: String::from_utf8_lossy(&token.currency).into_owned(),
                expected: self.config.currency.clone(),
            });
        }
        if token.amount_minor > MAX_TOKEN_AMOUNT {
            return Err(TopUpError::Amount {
                amount: token.amount_minor,
                max: MAX_TOKEN_AMOUNT,
            });
        }
        // Serials may arrive in any order: what is refused is a serial already applied (above, from the
        // token records) or applied before the store was restored (the head-end's statement).
        if SerialSpan::contains(&current.restored, token.serial) {
            return Err(TopUpError::AppliedBeforeRestore {
                meter: token.meter_id,
                serial: token.serial,
            });
        }
        if let Some(order) =
            crate::tenancy::previous_tenant_of(&self.store, &token.meter_id, token.serial)?
        {
            return Err(TopUpError::PreviousTenant {
                meter: token.meter_id,
                serial: token.serial,
                customer: order.old_customer,
                order_id: order.order_id,
            });
        }
        let mut a = self.staged_copy(txn, &token.meter_id)?;
        let amount = token.amount_minor as i64;
        let recovered = match self.config.debt_recovery {
            DebtRecovery::PercentOfTopUp { basis_points } => {
                share_of(amount, basis_points).min(a.debt_minor).max(0)
            }
            DebtRecovery::FixedPerDay { .. } => 0,
        };
        a.tokens_minor += amount;
        a.tokens_applied += 1;
        a.recovered_minor += recovered;
        a.debt_minor -= recovered;
        a.last_serial = a.last_serial.max(Some(token.serial));
        // Emergency credit used is repaid by the top-up; once the balance is above zero it is deselected.
        if a.emergency_selected && a.balance_minor() > 0 {
            a.emergency_selected = false;
        }
        a.last_topup = Some(LastTopUp {
            serial: token.serial,
            amount_minor: amount,
            at: now,
        });
        let receipt = Receipt {
            meter_id: token.meter_id.clone(),
            serial: token.serial,
            amount_minor: token.amount_minor,
            currency: token.currency,
            applied_at: now,
            balance_after_minor: a.balance_minor(),
            gateway_id: self.config.gateway_id.clone(),
        };
        let signing = |e: String| LedgerError::Signing {
            what: "receipt",
            reason: e,
        };
        let wire = receipt
            .sign(&self.signer)
            .map_err(|e| signing(e.to_string()))?
            .encode()
            .ok_or_else(|| signing("a field is too long for the wire format".into()))?;
        // Everything that can fail is done; from here on the transaction only grows.
        txn.audit(
            now,
            &token.meter_id,
            AuditEvent::TokenApplied {
                serial: token.serial,
                amount_minor: amount,
                recovered_minor: recovered,
                balance_after_minor: a.balance_minor(),
            },
        );
        let mut record = digest.to_vec();
        record.extend_from_slice(&wire);
        txn.batch.put(Keyspace::Tokens, key.clone(), record.clone());
        txn.tokens.insert(key, record);
        txn.outbox(OutboxKind::Receipt, &wire);
        txn.touched.insert(token.meter_id.clone(), a);
        self.settle(txn, &token.meter_id, now)?;
        Ok(TopUpReceipt {
            receipt,
            signed: wire,
        })
    }
}
