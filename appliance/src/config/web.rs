//! The `[web]` table: the installer web UI served by the daemon itself (appliance/src/web). Absent: no
//! UI. It listens only where `listen` says (loopback by default), over HTTPS with the certificate and key
//! named here, and lets in only the users of the users file, whose passwords are stored as scrypt hashes
//! (`concentrator web hash-password` makes one).
//!
//! ```toml
//! [web]
//! listen = ["127.0.0.1:8443"]
//! cert = "/etc/concentrator/gateway.pem"
//! key = "/etc/concentrator/gateway.key"
//! users = "/etc/concentrator/web-users.toml"
//! session_minutes = 30
//! ```
//!
//! The users file:
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! role = "installer"      # or "read-only"
//! password = "scrypt$14$8$1$…"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::{line_col, Diagnostic};
use super::model::Config;

/// `[web]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Addresses to listen on, `IP:PORT`; default: loopback only.
    #[serde(default = "default_listen")]
    pub listen: Spanned<Vec<Spanned<String>>>,
    /// The server certificate (PEM), then any intermediates: the gateway's, or one made at provisioning.
    pub cert: Spanned<PathBuf>,
    /// Its private key (PEM).
    pub key: Spanned<PathBuf>,
    /// The users file (TOML, `[[user]]` tables with `name`, `role` and a `password` hash).
    pub users: Spanned<PathBuf>,
    /// How long a session lasts without use, minutes (1 to 720; default 30).
    #[serde(default = "default_session")]
    pub session_minutes: Spanned<u32>,
}

fn default_listen() -> Spanned<Vec<Spanned<String>>> {
    Spanned::new(0..0, vec![Spanned::new(0..0, "127.0.0.1:8443".into())])
}

fn default_session() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Role {
    /// Everything: relay tests, tokens, permit-join, commissioning.
    #[serde(rename = "installer")]
    Installer,
    /// Look only.
    #[serde(rename = "read-only")]
    ReadOnly,
}

/// One user of the users file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebUser {
    /// The login name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// The scrypt hash of their password (`scrypt$14$8$1$SALT$HASH`).
    pub password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<WebUser>,
}

/// Everything the UI needs, loaded and checked.
pub struct WebSetup {
    /// Where to listen.
    pub listen: Vec<SocketAddr>,
    /// The certificate chain, leaf first.
    pub chain: Vec<X509>,
    /// Its key.
    pub key: PKey<Private>,
    /// The users.
    pub users: Vec<WebUser>,
    /// Session lifetime without use.
    pub session: std::time::Duration,
}

impl std::fmt::Debug for WebSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSetup")
            .field("listen", &self.listen)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl WebSetup {
    /// Loads the `[web]` table of a (validated) configuration; `Ok(None)` without one.
    pub fn load(config: &Config) -> Result<Option<WebSetup>, String> {
        match &config.web {
            None => Ok(None),
            Some(s) => load(s).map(Some).map_err(|d| {
                format!(
                    "the [web] table cannot be used: {}",
                    d.iter()
                        .map(Diagnostic::summary)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }),
        }
    }
}

/// The diagnostics of the `[web]` table (empty when usable or absent).
pub(super) fn check(config: &Config) -> Vec<Diagnostic> {
    match &config.web {
        Some(s) => load(s).err().unwrap_or_default(),
        None => Vec::new(),
    }
}

fn load(s: &WebSection) -> Result<WebSetup, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut listen = Vec::new();
    if s.listen.get_ref().is_empty() {
        out.push(
            Diagnostic::at(s.listen.span(), "no address to listen on")
                .help("write `listen = [\"127.0.0.1:8443\"]`, or remove [web] to turn the UI off"),
        );
    }
    for a in s.listen.get_ref() {
        match a.get_ref().parse::<SocketAddr>() {
            Ok(addr) => listen.push(addr),
            Err(_) => out.push(
                Diagnostic::at(a.span(), format!("`{}` is not IP:PORT", a.get_ref()))
                    .help("write an address and port such as `127.0.0.1:8443` or `[::1]:8443` (no host names)"),
            ),
        }
    }
    let minutes = *s.session_minutes.get_ref();
    if !(1..=720).contains(&minutes) {
        out.push(
            Diagnostic::at(
                s.session_minutes.span(),
                format!("a session of {minutes} minutes"),
            )
            .help("write a number from 1 to 720 (`session_minutes = 30`)"),
        );
    }
    let chain = read(&s.cert, "the web UI's certificate").and_then(|pem| {
        X509::stack_from_pem(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Diagnostic::at(s.cert.span(), format!("{} holds no PEM certificate", s.cert.get_ref().display()))
                    .help("give the gateway's certificate (`-----BEGIN CERTIFICATE-----`) or one made at provisioning")
            })
    });
    let key = read(&s.key, "the web UI's private key").and_then(|pem| {
        PKey::private_key_from_pem(&pem).map_err(|_| {
            Diagnostic::at(s.key.span(), format!("{} is not a PEM private key", s.key.get_ref().display()))
                .help("give the key of the certificate above (`-----BEGIN PRIVATE KEY-----` or `EC PRIVATE KEY`)")
        })
    });
    if let (Ok(chain), Ok(key)) = (&chain, &key) {
        let matches = chain[0]
            .public_key()
            .map(|p| p.public_eq(key))
            .unwrap_or(false);
        if !matches {
            out.push(
                Diagnostic::at(
                    s.key.span(),
                    format!(
                        "{} is not the key of the certificate {}",
                        s.key.get_ref().display(),
                        s.cert.get_ref().display()
                    ),
                )
                .help("name the certificate and key that were made together"),
            );
        }
    }
    let users = read(&s.users, "the web UI's users file").and_then(|bytes| users(&s.users, &bytes));
    let (chain, key, users) = match (chain, key, users) {
        (Ok(c), Ok(k), Ok(u)) if out.is_empty() => (c, k, u),
        (c, k, u) => {
            out.extend(c.err());
            out.extend(k.err());
            out.extend(u.err());
            return Err(out);
        }
    };
    Ok(WebSetup {
        listen,
        chain,
        key,
        users,
        session: std::time::Duration::from_secs(u64::from(minutes) * 60),
    })
}

/// Checks the form of a stored hash (`scrypt$14$8$1$SALT$HASH`) without computing scrypt (16 MiB
/// each time, which would stay in the daemon's resident memory).
fn hash_format(stored: &str) -> Result<(), String> {
    let parts: Vec<&str> = stored.split('$').collect();
    let [tag, log2_n, r, p, salt, hash] = parts.as_slice() else {
        return Err(format!(
            "{} fields separated by `$`, expected 6",
            parts.len()
        ));
    };
    if *tag != "scrypt" {
        return Err(format!("it starts with {tag:?}, not `scrypt`"));
    }
    for (what, v) in [("log2 N", log2_n), ("r", r), ("p", p)] {
        v.parse::<u32>()
            .map_err(|_| format!("its {what} {v:?} is not a number"))?;
    }
    let salt = hex::decode(salt).map_err(|_| "its salt is not hex".to_string())?;
    let hash = hex::decode(hash).map_err(|_| "its hash is not hex".to_string())?;
    if salt.is_empty() || hash.len() != concentrator_mpc::password::HASH_LEN {
        return Err(format!(
            "a hash of {} octets, expected {}",
            hash.len(),
            concentrator_mpc::password::HASH_LEN
        ));
    }
    Ok(())
}

fn read(path: &Spanned<PathBuf>, what: &str) -> Result<Vec<u8>, Diagnostic> {
    std::fs::read(path.get_ref()).map_err(|e| {
        Diagnostic::at(
            path.span(),
            format!("cannot read {what} {}: {e}", path.get_ref().display()),
        )
        .help("check the path and that the daemon's user may read the file")
    })
}

/// Parses and checks the users file; its own mistakes are named as `file:line:column`.
fn users(path: &Spanned<PathBuf>, bytes: &[u8]) -> Result<Vec<WebUser>, Diagnostic> {
    let at =
        |message: String, help: &str| Diagnostic::at(path.span(), message).help(help.to_string());
    let file = path.get_ref().display();
    let text = std::str::from_utf8(bytes).map_err(|_| {
        at(
            format!("{file} is not UTF-8 text"),
            "write the users file as TOML",
        )
    })?;
    let parsed: UsersFile = toml::from_str(text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or((1, 1));
        at(
            format!("{file}:{line}:{col}: {}", e.message().trim()),
            "each user is a [[user]] table with `name`, `role` (\"installer\" or \"read-only\") and `password` (from `concentrator web hash-password`)",
        )
    })?;
    if parsed.user.is_empty() {
        return Err(at(
            format!("{file} lists no user"),
            "add a [[user]] table; `concentrator web hash-password` makes the `password` value",
        ));
    }
    for (i, u) in parsed.user.iter().enumerate() {
        if u.name.is_empty()
            || !u
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(at(
                format!("{file}: user {} has the name {:?}", i + 1, u.name),
                "use letters, digits, `-`, `_` and `.`",
            ));
        }
        if parsed.user[..i].iter().any(|o| o.name == u.name) {
            return Err(at(
                format!("{file}: the user `{}` is listed twice", u.name),
                "keep one [[user]] table per name",
            ));
        }
        if let Err(e) = hash_format(&u.password) {
            return Err(at(format!("{file}: the password of `{}` is not a stored hash: {e}", u.name), "write the hash that `concentrator web hash-password` prints, never the password itself"));
        }
    }
    Ok(parsed.user)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn base(web: &str) -> String {
        format!("[gateway]\nid = \"gw\"\nstore = \"/tmp/x\"\n\n{web}")
    }

    #[test]
    fn every_mistake_in_web_is_reported_at_once_at_its_key() {
        let dir = std::env::temp_dir().join(format!("web-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users.toml");
        std::fs::write(
            &users,
            "[[user]]\nname = \"alice\"\nrole = \"installer\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let text = base(&format!(
            "[web]\nlisten = [\"localhost:8443\"]\ncert = \"{0}/none.pem\"\nkey = \"{0}/none.key\"\nusers = \"{1}\"\nsession_minutes = 0\n",
            dir.display(),
            users.display()
        ));
        let e = Config::parse("gw.toml", &text).unwrap_err().to_string();
        for wanted in [
            "gw.toml:6:11",
            "`localhost:8443` is not IP:PORT",
            "cannot read the web UI's certificate",
            "cannot read the web UI's private key",
            "the password of `alice` is not a stored hash",
            "never the password itself",
            "a session of 0 minutes",
        ] {
            assert!(e.contains(wanted), "{wanted:?} missing from:\n{e}");
        }
        // The users file's own syntax errors are named at their line.
        std::fs::write(
            &users,
            "[[user]]\nname = \"alice\"\nrole = \"admin\"\npassword = \"x\"\n",
        )
        .unwrap();
        let e = Config::parse("gw.toml", &text).unwrap_err().to_string();
        assert!(e.contains(&format!("{}:3:8", users.display())), "{e}");
        // Without [web] there is no UI and nothing to check.
        assert!(Config::parse("gw.toml", &base("")).unwrap().web.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
