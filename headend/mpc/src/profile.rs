//! The phone's profile: server, CA, user, IMSI, K, OPc and the SQN window, in a TOML file that only its
//! owner may read (created 0600 in a 0700 directory; refused if group or others can read it), and the
//! tokens bought, one file each in `<profile dir>/tokens/<meter>-<serial>.token` (hex of the
//! `SignedToken` octets, which `concentrator topup --token FILE` reads).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use concentrator_security::sqn::SqnWindow;
use concentrator_security::token::{CreditToken, SignedToken};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::client::Keys;

/// Environment variable naming the profile file.
pub const PROFILE_ENV: &str = "MPC_PROFILE";

/// Why the profile or a token file could not be used.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// No profile at the path.
    #[error("no profile at {0}: run `mpc register` first (or give --profile / MPC_PROFILE)")]
    Missing(PathBuf),
    /// Group or others may read the file (or write the directory).
    #[error("{path} is readable by others (mode {mode:04o}) and holds the phone's secret keys: run `chmod {fix} {path}`")]
    TooOpen {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// The mode to set.
        fix: &'static str,
    },
    /// The file is not a profile.
    #[error("{path} is not a valid profile: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither `MPC_PROFILE` nor `HOME` is set.
    #[error("cannot find the profile: set MPC_PROFILE or HOME, or give --profile FILE")]
    NoHome,
}

/// The profile file's contents.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The payment server, `HOST:PORT`.
    pub server: String,
    /// The utility CA certificate file (PEM) that the server's certificate must chain to.
    pub ca: PathBuf,
    /// The customer's id at the utility.
    pub customer: String,
    /// The user name.
    pub user: String,
    /// The subscriber identity.
    pub imsi: String,
    /// K, 32 hex digits.
    pub k: String,
    /// OPc, 32 hex digits.
    pub opc: String,
    /// The SQN window.
    pub sqn: SqnWindow,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("server", &self.server)
            .field("ca", &self.ca)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ProfileError + 'a {
    move |source| ProfileError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// `MPC_PROFILE`, else `$XDG_CONFIG_HOME/mpc/profile.toml`, else `~/.config/mpc/profile.toml`.
pub fn default_path() -> Result<PathBuf, ProfileError> {
    if let Some(p) = std::env::var_os(PROFILE_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(x).join("mpc/profile.toml"));
    }
    let home = std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .ok_or(ProfileError::NoHome)?;
    Ok(PathBuf::from(home).join(".config/mpc/profile.toml"))
}

fn hex16(s: &str, field: &str, path: &Path) -> Result<[u8; 16], ProfileError> {
    let mut out = [0u8; 16];
    hex::decode_to_slice(s, &mut out).map_err(|e| ProfileError::Invalid {
        path: path.to_owned(),
        reason: format!("`{field}` must be 32 hex digits: {e}"),
    })?;
    Ok(out)
}

fn check_private(path: &Path, fix: &'static str) -> Result<(), ProfileError> {
    let meta = fs::metadata(path).map_err(io_err("cannot read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ProfileError::TooOpen {
            path: path.to_owned(),
            mode,
            fix,
        });
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
fn private_dir(dir: &Path) -> Result<(), ProfileError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("cannot create the directory", dir))?;
    }
    Ok(())
}

/// Writes `content` to `path` with mode 0600: a temporary file, synced, then renamed over.
fn write_private(path: &Path, content: &[u8]) -> Result<(), ProfileError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("cannot create", &tmp))?;
    f.write_all(content)
        .and_then(|()| f.sync_all())
        .map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot replace", path))
}

impl Profile {
    /// A profile for new credentials.
    pub fn new(server: &str, ca: &Path, keys: &Keys) -> Profile {
        let mut p = Profile {
            server: server.to_owned(),
            ca: ca.to_owned(),
            customer: String::new(),
            user: String::new(),
            imsi: String::new(),
            k: String::new(),
            opc: String::new(),
            sqn: SqnWindow::default(),
        };
        p.set_keys(keys);
        p
    }

    /// Reads the profile, refusing it if group or others can read it.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        if !path.exists() {
            return Err(ProfileError::Missing(path.to_owned()));
        }
        check_private(path, "600")?;
        let text = fs::read_to_string(path).map_err(io_err("cannot read", path))?;
        let p: Profile = toml::from_str(&text).map_err(|e| ProfileError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        p.keys(path)?;
        Ok(p)
    }

    /// Writes the profile (0600, its directory 0700 if created here).
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir)?;
        }
        let text = toml::to_string(self).map_err(|e| ProfileError::Invalid {
            path: path.to_owned(),
            reason: format!("cannot write it: {e}"),
        })?;
        write_private(path, text.as_bytes())
    }

    /// The credentials for [`crate::client::Client::login`]; `path` names the file in errors.
    pub fn keys(&self, path: &Path) -> Result<Keys, ProfileError> {
        Ok(Keys {
            customer: self.customer.clone(),
            user: self.user.clone(),
            imsi: self.imsi.clone(),
            k: hex16(&self.k, "k", path)?,
            opc: hex16(&self.opc, "opc", path)?,
            sqn: self.sqn.clone(),
        })
    }

    /// Takes the credentials (after a login moved the SQN window).
    pub fn set_keys(&mut self, keys: &Keys) {
        self.customer = keys.customer.clone();
        self.user = keys.user.clone();
        self.imsi = keys.imsi.clone();
        self.k = hex::encode(keys.k);
        self.opc = hex::encode(keys.opc);
        self.sqn = keys.sqn.clone();
    }
}

/// A token saved in the profile's token directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedToken {
    /// The file.
    pub path: PathBuf,
    /// The token's fields (read from the file, not verified: the gateway verifies).
    pub token: CreditToken,
}

/// The token directory of a profile.
pub fn tokens_dir(profile_path: &Path) -> PathBuf {
    profile_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("tokens")
}

/// A meter number as a file-name part: anything but `A-Z a-z 0-9 - _ .` becomes `_`.
fn file_part(meter: &str) -> String {
    meter
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Saves a token's octets (hex) as `<tokens dir>/<meter>-<serial>.token`, 0600; returns the path.
pub fn save_token(
    profile_path: &Path,
    meter: &str,
    serial: u64,
    token: &[u8],
) -> Result<PathBuf, ProfileError> {
    let dir = tokens_dir(profile_path);
    private_dir(&dir)?;
    let path = dir.join(format!("{}-{serial}.token", file_part(meter)));
    write_private(&path, format!("{}\n", hex::encode(token)).as_bytes())?;
    Ok(path)
}

/// Reads a token file (hex or raw) and decodes the token in it.
pub fn read_token(path: &Path) -> Result<(Vec<u8>, CreditToken), ProfileError> {
    let content = fs::read(path).map_err(io_err("cannot read", path))?;
    let text: String = String::from_utf8_lossy(&content)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let octets = match hex::decode(&text) {
        Ok(b) if !text.is_empty() => b,
        _ => content,
    };
    let invalid = |reason: String| ProfileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let signed =
        SignedToken::decode(&octets).map_err(|e| invalid(format!("not a signed token: {e}")))?;
    let token = CreditToken::decode(&signed.0.body)
        .map_err(|e| invalid(format!("not a credit token: {e}")))?;
    Ok((octets, token))
}

/// Every saved token, by meter then serial. Files that are not tokens are reported in the second list.
pub fn list_tokens(
    profile_path: &Path,
) -> Result<(Vec<SavedToken>, Vec<ProfileError>), ProfileError> {
    let dir = tokens_dir(profile_path);
    let mut tokens = Vec::new();
    let mut bad = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((tokens, bad)),
        Err(e) => return Err(io_err("cannot list", &dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err("cannot list", &dir))?.path();
        if path.extension().is_none_or(|e| e != "token") {
            continue;
        }
        match read_token(&path) {
            Ok((_, token)) => tokens.push(SavedToken { path, token }),
            Err(e) => bad.push(e),
        }
    }
    tokens.sort_by(|a, b| {
        (&a.token.meter_id, a.token.serial).cmp(&(&b.token.meter_id, b.token.serial))
    });
    Ok((tokens, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            customer: "C-1".into(),
            user: "alice".into(),
            imsi: "001010000000001".into(),
            k: [1; 16],
            opc: [2; 16],
            sqn: SqnWindow::default(),
        }
    }

    #[test]
    fn saved_profiles_are_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("mpc-profile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub/profile.toml");
        let p = Profile::new("localhost:1", Path::new("/ca.pem"), &keys());
        p.save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let back = Profile::load(&path).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.keys(&path).unwrap(), keys());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Profile::load(&path).unwrap_err();
        assert!(
            matches!(e, ProfileError::TooOpen { mode: 0o644, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn meter_numbers_become_safe_file_names() {
        assert_eq!(file_part("MTR/0001 x"), "MTR_0001_x");
        assert_eq!(file_part("../etc"), ".._etc");
    }
}
