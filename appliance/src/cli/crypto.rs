//! `concentrator crypto`: auth-vector and cipher tools over the security crate.
//!
//! Each subcommand reads its inputs from arguments (hex unless said otherwise) and prints `NAME=hex`
//! lines in lowercase, like the auth-vector generators of the field, so that the output can be diffed
//! against 3GPP test data or another tool's output. Bad hex, a wrong length or a missing argument is a
//! usage error (exit code 2).

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use concentrator_security::bits::{byte_len, Direction};
use concentrator_security::milenage::Milenage;
use concentrator_security::suci::{self, Profile};
use concentrator_security::{Eea2, Eia2, Kasumi, Uea1, Uia1};

use super::CliError;

/// The `crypto` subcommands.
#[derive(Debug, Subcommand)]
pub enum CryptoCommand {
    /// Milenage f1..f5* for one RAND, SQN and AMF: prints OPc, MAC-A, MAC-S, RES, CK, IK, AK, AK*, AUTN.
    Milenage {
        #[command(flatten)]
        subscriber: SubscriberArgs,
        /// RAND, 16 octets.
        #[arg(long)]
        rand: String,
        /// SQN, 6 octets.
        #[arg(long)]
        sqn: String,
        /// AMF, 2 octets.
        #[arg(long)]
        amf: String,
    },
    /// AUTS for resynchronisation, as the meter side sends it: prints AUTS.
    Auts {
        #[command(flatten)]
        subscriber: SubscriberArgs,
        /// RAND of the rejected challenge, 16 octets.
        #[arg(long)]
        rand: String,
        /// SQN_MS, the highest SQN the meter side accepted, 6 octets.
        #[arg(long = "sqn-ms")]
        sqn_ms: String,
        /// AMF* for MAC-S, 2 octets; TS 33.102 fixes it to 0000.
        #[arg(long, default_value = "0000")]
        amf: String,
    },
    /// Server side of resynchronisation: checks AUTS and prints SQN-MS.
    Resync {
        #[command(flatten)]
        subscriber: SubscriberArgs,
        /// RAND of the rejected challenge, 16 octets.
        #[arg(long)]
        rand: String,
        /// AUTS from the meter side, 14 octets.
        #[arg(long)]
        auts: String,
    },
    /// One KASUMI block encryption: prints CIPHERTEXT.
    Kasumi {
        /// Key, 16 octets.
        #[arg(long)]
        key: String,
        /// Plaintext block, 8 octets.
        #[arg(long)]
        block: String,
    },
    /// Confidentiality (UEA1 or 128-EEA2) over a bit string: prints OUTPUT, the first length-bits bits,
    /// padded with zero bits to whole octets.
    F8 {
        /// The algorithm.
        #[arg(long, value_enum)]
        alg: CipherAlg,
        #[command(flatten)]
        params: BitParams,
        /// BEARER, 0..=31.
        #[arg(long)]
        bearer: u8,
    },
    /// Integrity (UIA1 or 128-EIA2) over a bit string: prints MAC.
    F9 {
        /// The algorithm.
        #[arg(long, value_enum)]
        alg: IntegrityAlg,
        #[command(flatten)]
        params: BitParams,
        /// FRESH, 32-bit hex (uia1 only).
        #[arg(long)]
        fresh: Option<String>,
        /// BEARER, 0..=31 (eia2 only).
        #[arg(long)]
        bearer: Option<u8>,
    },
    /// SUCI-style ECIES concealment (TS 33.501 Annex C).
    Suci {
        #[command(subcommand)]
        command: SuciCommand,
    },
}

/// `crypto suci` subcommands.
#[derive(Debug, Subcommand)]
pub enum SuciCommand {
    /// Conceals an MSIN: prints SCHEME-OUTPUT.
    Conceal {
        /// ECIES profile.
        #[arg(long, value_enum)]
        profile: SuciProfile,
        /// Home-network public key (profile a: 32 octets; b: 33 compressed or 65 uncompressed).
        #[arg(long = "hn-public")]
        hn_public: String,
        /// Ephemeral private key, 32 octets.
        #[arg(long = "eph-private")]
        eph_private: String,
        /// MSIN, decimal digits.
        #[arg(long)]
        msin: String,
    },
    /// De-conceals a scheme output: prints MSIN.
    Reveal {
        /// ECIES profile.
        #[arg(long, value_enum)]
        profile: SuciProfile,
        /// Home-network private key, 32 octets.
        #[arg(long = "hn-private")]
        hn_private: String,
        /// Scheme output: ephemeral public key || ciphertext || MAC tag.
        #[arg(long = "scheme-output")]
        scheme_output: String,
    },
}

/// K with OP or OPc.
#[derive(Debug, Args)]
#[group(skip)]
pub struct SubscriberArgs {
    /// Subscriber key K, 16 octets.
    #[arg(long)]
    k: String,
    /// Operator variant OP, 16 octets (or give --opc).
    #[arg(long, required_unless_present = "opc", conflicts_with = "opc")]
    op: Option<String>,
    /// OPc, 16 octets (or give --op).
    #[arg(long, required_unless_present = "op")]
    opc: Option<String>,
}

/// COUNT, DIRECTION, LENGTH, the key and the data of f8 and f9.
#[derive(Debug, Args)]
pub struct BitParams {
    /// Key (CK or IK), 16 octets.
    #[arg(long)]
    key: String,
    /// COUNT, 32-bit hex (8 digits).
    #[arg(long)]
    count: String,
    /// DIRECTION, 0 (uplink) or 1 (downlink).
    #[arg(long)]
    direction: u8,
    /// LENGTH of the message in bits.
    #[arg(long = "length-bits")]
    length_bits: usize,
    /// The message, hex, at least ceil(length-bits / 8) octets; bits past LENGTH are ignored.
    #[arg(long)]
    data: String,
}

/// f8 algorithms.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CipherAlg {
    /// UEA1, KASUMI in f8 mode.
    Uea1,
    /// 128-EEA2, AES-CTR.
    Eea2,
}

/// f9 algorithms.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IntegrityAlg {
    /// UIA1, KASUMI in f9 mode.
    Uia1,
    /// 128-EIA2, AES-CMAC.
    Eia2,
}

/// ECIES profiles.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SuciProfile {
    /// X25519.
    A,
    /// P-256 with compressed points.
    B,
}

impl From<SuciProfile> for Profile {
    fn from(p: SuciProfile) -> Self {
        match p {
            SuciProfile::A => Profile::A,
            SuciProfile::B => Profile::B,
        }
    }
}

/// Hex of any length (an optional `0x` prefix and surrounding spaces are accepted).
fn hex_any(name: &str, value: &str) -> Result<Vec<u8>, CliError> {
    let v = value.trim();
    let v = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v);
    hex::decode(v).map_err(|e| {
        CliError::usage(format!(
            "--{name}: {value:?} is not hex ({e}); give an even number of hex digits"
        ))
    })
}

/// Hex of exactly `N` octets.
fn hex_n<const N: usize>(name: &str, value: &str) -> Result<[u8; N], CliError> {
    let bytes = hex_any(name, value)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        CliError::usage(format!(
            "--{name}: expected {N} octets ({} hex digits), got {len} octets",
            2 * N
        ))
    })
}

fn u32_hex(name: &str, value: &str) -> Result<u32, CliError> {
    Ok(u32::from_be_bytes(hex_n::<4>(name, value)?))
}

fn direction(bit: u8) -> Result<Direction, CliError> {
    Direction::from_bit(bit).ok_or_else(|| {
        CliError::usage(format!(
            "--direction: {bit} is not 0 (uplink) or 1 (downlink)"
        ))
    })
}

fn subscriber(args: &SubscriberArgs) -> Result<Milenage, CliError> {
    let k = hex_n::<16>("k", &args.k)?;
    match (&args.op, &args.opc) {
        (Some(op), None) => Ok(Milenage::with_op(&k, &hex_n("op", op)?)),
        (None, Some(opc)) => Ok(Milenage::with_opc(&k, &hex_n("opc", opc)?)),
        _ => Err(CliError::usage("give exactly one of --op and --opc")),
    }
}

fn line(out: &mut dyn Write, name: &str, value: &[u8]) -> Result<(), CliError> {
    writeln!(out, "{name}={}", hex::encode(value)).map_err(|e| CliError::Failed(e.into()))
}

/// The message data of f8/f9, checked against LENGTH.
fn bit_data(params: &BitParams) -> Result<Vec<u8>, CliError> {
    let data = hex_any("data", &params.data)?;
    let needed = byte_len(params.length_bits);
    if data.len() < needed {
        return Err(CliError::usage(format!(
            "--data: {} octets cannot hold --length-bits {} (needs {needed} octets)",
            data.len(),
            params.length_bits
        )));
    }
    Ok(data)
}

fn usage_from(e: impl std::fmt::Display) -> CliError {
    CliError::usage(e.to_string())
}

/// Runs one `crypto` subcommand, writing its `NAME=hex` lines to `out`.
pub fn run(command: CryptoCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        CryptoCommand::Milenage {
            subscriber: s,
            rand,
            sqn,
            amf,
        } => {
            let m = subscriber(&s)?;
            let (rand, sqn, amf) = (
                hex_n::<16>("rand", &rand)?,
                hex_n::<6>("sqn", &sqn)?,
                hex_n::<2>("amf", &amf)?,
            );
            let o = m.compute(&rand, &sqn, &amf);
            line(out, "OPc", &m.opc())?;
            line(out, "MAC-A", &o.mac_a)?;
            line(out, "MAC-S", &o.mac_s)?;
            line(out, "RES", &o.res)?;
            line(out, "CK", &o.ck)?;
            line(out, "IK", &o.ik)?;
            line(out, "AK", &o.ak)?;
            line(out, "AK*", &o.ak_star)?;
            line(out, "AUTN", &o.autn(&sqn, &amf))
        }
        CryptoCommand::Auts {
            subscriber: s,
            rand,
            sqn_ms,
            amf,
        } => {
            let m = subscriber(&s)?;
            let auts = m.auts_with_amf(
                &hex_n("rand", &rand)?,
                &hex_n("sqn-ms", &sqn_ms)?,
                &hex_n("amf", &amf)?,
            );
            line(out, "AUTS", &auts)
        }
        CryptoCommand::Resync {
            subscriber: s,
            rand,
            auts,
        } => {
            let m = subscriber(&s)?;
            match m.verify_auts(&hex_n("rand", &rand)?, &hex_n("auts", &auts)?) {
                Some(sqn_ms) => line(out, "SQN-MS", &sqn_ms),
                None => Err(CliError::Failed(anyhow::anyhow!(
                    "MAC-S in AUTS does not verify: wrong K/OPc or RAND, or AUTS altered"
                ))),
            }
        }
        CryptoCommand::Kasumi { key, block } => {
            let k = Kasumi::new(&hex_n("key", &key)?);
            line(
                out,
                "CIPHERTEXT",
                &k.encrypt_block(&hex_n("block", &block)?),
            )
        }
        CryptoCommand::F8 {
            alg,
            params,
            bearer,
        } => {
            let key = hex_n::<16>("key", &params.key)?;
            let count = u32_hex("count", &params.count)?;
            let dir = direction(params.direction)?;
            let mut data = bit_data(&params)?;
            let bits = params.length_bits;
            match alg {
                CipherAlg::Uea1 => Uea1::new(&key).apply(count, bearer, dir, &mut data, bits),
                CipherAlg::Eea2 => Eea2::new(&key).apply(count, bearer, dir, &mut data, bits),
            }
            .map_err(usage_from)?;
            line(out, "OUTPUT", &data[..byte_len(bits)])
        }
        CryptoCommand::F9 {
            alg,
            params,
            fresh,
            bearer,
        } => {
            let key = hex_n::<16>("key", &params.key)?;
            let count = u32_hex("count", &params.count)?;
            let dir = direction(params.direction)?;
            let data = bit_data(&params)?;
            let bits = params.length_bits;
            let mac = match alg {
                IntegrityAlg::Uia1 => {
                    let fresh = fresh
                        .ok_or_else(|| CliError::usage("--fresh is required with --alg uia1"))?;
                    Uia1::new(&key).mac(count, u32_hex("fresh", &fresh)?, dir, &data, bits)
                }
                IntegrityAlg::Eia2 => {
                    let bearer = bearer
                        .ok_or_else(|| CliError::usage("--bearer is required with --alg eia2"))?;
                    Eia2::new(&key).mac(count, bearer, dir, &data, bits)
                }
            }
            .map_err(usage_from)?;
            line(out, "MAC", &mac)
        }
        CryptoCommand::Suci { command } => match command {
            SuciCommand::Conceal {
                profile,
                hn_public,
                eph_private,
                msin,
            } => {
                let plain = suci::msin_to_bcd(&msin).map_err(usage_from)?;
                let (output, _) = suci::conceal_with_ephemeral(
                    profile.into(),
                    &hex_any("hn-public", &hn_public)?,
                    &hex_any("eph-private", &eph_private)?,
                    &plain,
                )
                .map_err(usage_from)?;
                line(out, "SCHEME-OUTPUT", &output)
            }
            SuciCommand::Reveal {
                profile,
                hn_private,
                scheme_output,
            } => {
                let plain = suci::reveal(
                    profile.into(),
                    &hex_any("hn-private", &hn_private)?,
                    &hex_any("scheme-output", &scheme_output)?,
                )
                .map_err(|e| match e {
                    suci::SuciError::BadMac => CliError::Failed(anyhow::anyhow!("{e}")),
                    other => usage_from(other),
                })?;
                let msin = suci::bcd_to_msin(&plain)
                    .map_err(|e| CliError::Failed(anyhow::anyhow!("{e}")))?;
                writeln!(out, "MSIN={msin}").map_err(|e| CliError::Failed(e.into()))
            }
        },
    }
}
