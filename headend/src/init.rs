//! `concentrator-headend init DIR`: a pilot's keys, certificates, configuration and broker files.
//!
//! Layout written:
//!
//! | path | what |
//! |---|---|
//! | `pki/ca.pem`, `pki/ca.key` | the utility CA (trust anchor of tokens, receipts, TLS) |
//! | `pki/headend-mqtt.pem/.key` | the head-end's MQTT client certificate, CN `head-end`, OU `head-end` |
//! | `pki/token-signer.pem/.key` | the token-signing certificate, OU `head-end` |
//! | `pki/phone-server.pem/.key` | the phone-facing server's TLS certificate |
//! | `pki/broker.pem/.key` | the pilot broker's TLS certificate |
//! | `pki/home-network.key/.pub` | the SUCI home-network key pair (hex) |
//! | `pki/kid-main.key` | the main key of KID derivation (hex) |
//! | `store/` | the subscriber store (sled; 0700) |
//! | `kek.hex` | the key-encryption key of the subscriber keys in the store (0600; back it up apart from the store) |
//! | `headend.toml` | the configuration |
//! | `mosquitto.conf`, `acl` | a pilot broker: TLS, client certificates, CN as user name, the ACL |

use std::path::{Path, PathBuf};

use concentrator_security::suci::Profile;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::PKey;

use crate::config::{self, Config};
use crate::error::{HeadEndError, Result};
use crate::pki::{self, CertSpec, Usage};

/// Settings of a new pilot.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The name gateways and phones reach the head-end and the broker by (added to the TLS names).
    pub host: String,
    /// The broker's TLS port.
    pub broker_port: u16,
    /// The broker URL written to headend.toml; `None`: `mqtts://{host}:{broker_port}`.
    pub broker_url: Option<String>,
    /// The phone listener.
    pub phone_listen: String,
    /// The web app's listener (`[phone_web] listen`); `None`: no web app.
    pub phone_web_listen: Option<String>,
    /// MCC and MNC of the pilot's IMSIs.
    pub mcc: String,
    /// See `mcc`.
    pub mnc: String,
    /// ISO 4217.
    pub currency: String,
    /// SUCI profile.
    pub profile: Profile,
    /// Home-network key id.
    pub key_id: u8,
    /// Certificate validity, days.
    pub days: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            host: "localhost".into(),
            broker_port: 8883,
            broker_url: None,
            phone_listen: "0.0.0.0:8443".into(),
            phone_web_listen: None,
            mcc: "001".into(),
            mnc: "01".into(),
            currency: "EUR".into(),
            profile: Profile::B,
            key_id: 1,
            days: 3650,
        }
    }
}

/// The ACL of docs/uplink.md (the protocol crate keeps it beside the topic scheme).
pub use concentrator_protocol::MOSQUITTO_ACL as ACL;

/// A home-network key pair (private, public) for the profile.
pub fn home_network_keys(profile: Profile) -> Result<(Vec<u8>, Vec<u8>)> {
    let e = HeadEndError::openssl;
    match profile {
        Profile::A => {
            let k = PKey::generate_x25519().map_err(e("generating the X25519 home-network key"))?;
            Ok((
                k.raw_private_key()
                    .map_err(e("encoding the home-network key"))?,
                k.raw_public_key()
                    .map_err(e("encoding the home-network key"))?,
            ))
        }
        Profile::B => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                .map_err(e("choosing the P-256 curve"))?;
            let k = EcKey::generate(&group).map_err(e("generating the P-256 home-network key"))?;
            let mut ctx = BigNumContext::new().map_err(e("encoding the home-network key"))?;
            let public = k
                .public_key()
                .to_bytes(&group, PointConversionForm::COMPRESSED, &mut ctx)
                .map_err(e("encoding the home-network key"))?;
            let private = k
                .private_key()
                .to_vec_padded(32)
                .map_err(e("encoding the home-network key"))?;
            Ok((private, public))
        }
    }
}

/// The user name owning `path` (from /etc/passwd), for the broker's `user` setting.
pub fn owner_name(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

/// The uid and gid of `user` (from /etc/passwd).
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The user the pilot broker runs as: the owner of the pilot's files, unless that is root; then
/// Debian's `mosquitto` user, given the broker's key and data directory (init runs as root then).
fn broker_user(pki_dir: &Path, key: &Path, data: &Path) -> String {
    match owner_name(pki_dir) {
        Some(o) if o != "root" => o,
        _ => {
            if let Some((uid, gid)) = user_ids("mosquitto") {
                for p in [key, data] {
                    if let Err(e) = std::os::unix::fs::chown(p, Some(uid), Some(gid)) {
                        log::warn!(
                            "cannot give {} to the mosquitto user: {e}; run `chown mosquitto: {}`",
                            p.display(),
                            p.display()
                        );
                    }
                }
            } else {
                log::warn!("there is no `mosquitto` user to run the pilot broker as: install Debian's mosquitto package (apt-get install mosquitto), then `chown mosquitto: {} {}`", key.display(), data.display());
            }
            "mosquitto".into()
        }
    }
}

/// Creates a pilot in `dir` (created if missing; refused if it already holds a headend.toml). Returns
/// the path of the configuration.
pub fn run(dir: &Path, o: &InitOptions) -> Result<PathBuf> {
    let conf_path = dir.join("headend.toml");
    if conf_path.exists() {
        return Err(HeadEndError::Exists(format!(
            "{} exists: this directory already holds a pilot; choose an empty directory (init never overwrites keys)",
            conf_path.display()
        )));
    }
    let pki_dir = dir.join("pki");
    for d in [dir.to_path_buf(), pki_dir.clone(), dir.join("store")] {
        std::fs::create_dir_all(&d).map_err(HeadEndError::io(
            "directory",
            &d,
            "check that the parent exists and is writable",
        ))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let store = dir.join("store");
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).map_err(
            HeadEndError::io("directory", &store, "check that it is yours"),
        )?;
    }
    crate::store::kek::Kek::create(&dir.join("kek.hex"))?;
    let (ca, ca_key) = pki::make_ca("concentrator pilot utility CA", o.days)?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !names.contains(&o.host) {
        names.push(o.host.clone());
    }
    let write_pair = |stem: &str,
                      cert: &openssl::x509::X509,
                      key: &PKey<openssl::pkey::Private>|
     -> Result<()> {
        pki::write_file(
            &pki_dir.join(format!("{stem}.pem")),
            "certificate",
            &pki::cert_pem(cert)?,
            false,
        )?;
        pki::write_file(
            &pki_dir.join(format!("{stem}.key")),
            "private key",
            &pki::key_pem(key)?,
            true,
        )
    };
    write_pair("ca", &ca, &ca_key)?;
    let issued = [
        (
            "headend-mqtt",
            CertSpec {
                cn: "head-end",
                ou: Some("head-end"),
                usage: Usage::ClientAndSigning,
                names: &[],
                days: o.days,
            },
        ),
        (
            "token-signer",
            CertSpec {
                cn: "token signer",
                ou: Some("head-end"),
                usage: Usage::Signing,
                names: &[],
                days: o.days,
            },
        ),
        (
            "phone-server",
            CertSpec {
                cn: &o.host,
                ou: Some("head-end"),
                usage: Usage::Server,
                names: &names,
                days: o.days,
            },
        ),
        (
            "broker",
            CertSpec {
                cn: &o.host,
                ou: None,
                usage: Usage::Server,
                names: &names,
                days: o.days,
            },
        ),
    ];
    for (stem, spec) in &issued {
        let (c, k) = pki::issue(&ca, &ca_key, spec)?;
        write_pair(stem, &c, &k)?;
    }
    let (hn_private, hn_public) = home_network_keys(o.profile)?;
    pki::write_file(
        &pki_dir.join("home-network.key"),
        "home-network key",
        hex::encode(hn_private).as_bytes(),
        true,
    )?;
    pki::write_file(
        &pki_dir.join("home-network.pub"),
        "home-network public key",
        hex::encode(hn_public).as_bytes(),
        false,
    )?;
    let mut kid_key = [0u8; 32];
    openssl::rand::rand_bytes(&mut kid_key)
        .map_err(HeadEndError::openssl("drawing the KID main key"))?;
    pki::write_file(
        &pki_dir.join("kid-main.key"),
        "KID main key",
        hex::encode(kid_key).as_bytes(),
        true,
    )?;

    let broker = o
        .broker_url
        .clone()
        .unwrap_or_else(|| format!("mqtts://{}:{}", o.host, o.broker_port));
    let conf = Config {
        pilot: config::Pilot {
            mcc: o.mcc.clone(),
            mnc: o.mnc.clone(),
            currency: o.currency.clone(),
        },
        mqtt: config::Mqtt {
            broker,
            client_id: "head-end".into(),
            shared_group: None,
            engines: 4,
            ca: "pki/ca.pem".into(),
            cert: "pki/headend-mqtt.pem".into(),
            key: "pki/headend-mqtt.key".into(),
        },
        pki: config::Pki {
            ca_cert: "pki/ca.pem".into(),
            ca_key: "pki/ca.key".into(),
            token_cert: "pki/token-signer.pem".into(),
            token_key: "pki/token-signer.key".into(),
            kid_key: "pki/kid-main.key".into(),
        },
        home_network: config::HomeNetwork {
            profile: match o.profile {
                Profile::A => "a".into(),
                Profile::B => "b".into(),
            },
            key_id: o.key_id,
            private_key: "pki/home-network.key".into(),
            public_key: "pki/home-network.pub".into(),
        },
        store: config::StoreSection {
            backend: config::StoreBackend::Sled,
            path: "store".into(),
            url: None,
            ca: None,
            pool: 8,
            dedup_per_gateway: 100_000,
            anchor: None,
            kek: Some("kek.hex".into()),
        },
        phone: config::Phone {
            listen: o.phone_listen.clone(),
            cert: "pki/phone-server.pem".into(),
            key: "pki/phone-server.key".into(),
        },
        tokens: config::Tokens::default(),
        aka: config::Aka::default(),
        reconcile: config::Reconcile::default(),
        phone_web: o
            .phone_web_listen
            .clone()
            .map(|listen| config::PhoneWeb { listen }),
        base: dir.to_path_buf(),
    };
    conf.check().map_err(|message| HeadEndError::Config {
        path: conf_path.clone(),
        message,
    })?;
    let body = toml::to_string(&conf).map_err(|e| HeadEndError::Config {
        path: conf_path.clone(),
        message: format!("cannot write it: {e}"),
    })?;
    let text = format!(
        "# The pilot's head-end configuration (concentrator-headend init). Relative paths are relative to\n\
         # this file's directory. headend/README.md describes every key.\n\n{body}"
    );
    pki::write_file(&conf_path, "configuration", text.as_bytes(), false)?;

    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let data = dir.join("broker-data");
    std::fs::create_dir_all(&data).map_err(HeadEndError::io(
        "directory",
        &data,
        "check that it is writable",
    ))?;
    let user = broker_user(&pki_dir, &pki_dir.join("broker.key"), &data);
    let mosquitto = format!(
        "# A pilot broker for the head-end and its gateways (docs/install.md, \"Running a pilot\"):\n\
         # TLS only, a client certificate from the utility CA required, its CN is the user name the ACL uses.\n\
         # Started as root, mosquitto switches to `user`: the owner of the files init wrote, or, when that\n\
         # is root, Debian's `mosquitto` user (given the broker's key and data directory); never root.\n\
         user {user}\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         persistence true\n\
         persistence_location {d}/broker-data/\n\
         # What the broker holds for a head-end that is down (a restart, an upgrade): every gateway's\n\
         # messages of a long outage, not Mosquitto's default 1,000 (the rest would be dropped and\n\
         # sent again by the gateways, all at once). About 300 bytes each.\n\
         max_queued_messages 1000000\n\
         acl_file {d}/acl\n\
         listener {port}\n\
         cafile {d}/pki/ca.pem\n\
         certfile {d}/pki/broker.pem\n\
         keyfile {d}/pki/broker.key\n\
         tls_version tlsv1.2\n\
         require_certificate true\n\
         use_identity_as_username true\n",
        d = abs.display(),
        port = o.broker_port,
    );
    pki::write_file(
        &dir.join("mosquitto.conf"),
        "broker configuration",
        mosquitto.as_bytes(),
        false,
    )?;
    pki::write_file(&dir.join("acl"), "broker ACL", ACL.as_bytes(), false)?;
    Ok(conf_path)
}
