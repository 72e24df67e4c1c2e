//! The token inbox: a directory where credit tokens are dropped as `*.token` files (raw or hex) by an
//! installer, a local UI or a test, for the running daemon to apply.
//!
//! Crash safety comes from the order of the steps, each of which a restart repeats harmlessly:
//! 1. the ledger applies the token and flushes its store (only then does it return the receipt);
//! 2. the signed receipt is written to `done/NAME.receipt` (a temporary file, synced, then renamed);
//! 3. the token is moved to `done/NAME.token`.
//!
//! A kill between 1 and 3 leaves the token in the inbox; at the next scan the ledger recognises the very
//! same token and returns its original receipt, so step 2 and 3 happen then, and nothing is applied
//! twice. A receipt file therefore always means the token is in the store. Refused tokens are moved to
//! `failed/NAME.token` with the reason in `failed/NAME.error`. Writers should create a file under another
//! name and rename it to `*.token`, so that the daemon never reads half a token (a half token is refused
//! as malformed, not applied).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A token file's octets: hex if the file is hex text, else the raw bytes (the inbox, `concentrator
/// topup` and the control socket read tokens alike).
pub fn token_octets(content: &[u8]) -> Vec<u8> {
    let text: String = String::from_utf8_lossy(content)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    match hex::decode(&text) {
        Ok(bytes) if !text.is_empty() => bytes,
        _ => content.to_vec(),
    }
}

/// The most tokens applied in one group commit (one flush).
pub const MAX_GROUP: usize = 64;

/// A token inbox directory with its `done/` and `failed/` subdirectories.
#[derive(Debug, Clone)]
pub struct TokenInbox {
    dir: PathBuf,
    done: PathBuf,
    failed: PathBuf,
}

impl TokenInbox {
    /// Creates the directories if needed.
    pub fn open(dir: &Path) -> io::Result<TokenInbox> {
        let inbox = TokenInbox {
            dir: dir.to_path_buf(),
            done: dir.join("done"),
            failed: dir.join("failed"),
        };
        fs::create_dir_all(&inbox.done)?;
        fs::create_dir_all(&inbox.failed)?;
        Ok(inbox)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Up to [`MAX_GROUP`] waiting `*.token` files for which `skip` is false, in name order (name them
    /// so that a meter's serials sort in order, e.g. `METER-000042.token`). The caller skips tokens it
    /// knows are waiting (for a meter's first reading), so that they never hold back the others.
    pub fn pending(&self, skip: impl Fn(&Path) -> bool) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "token") && !skip(p))
            .collect();
        files.sort();
        files.truncate(MAX_GROUP);
        Ok(files)
    }

    /// Records an applied (flushed) token: its receipt first, then the token moves to `done/`.
    pub fn accepted(&self, token: &Path, signed_receipt: &[u8]) -> io::Result<()> {
        let stem = stem(token);
        write_synced(
            &self.done.join(format!("{stem}.receipt")),
            format!("{}\n", hex::encode(signed_receipt)).as_bytes(),
        )?;
        fs::rename(token, self.done.join(format!("{stem}.token")))?;
        sync_dir(&self.dir)
    }

    /// Records a refused token: the reason, then the token moves to `failed/`.
    pub fn refused(&self, token: &Path, why: &str) -> io::Result<()> {
        let stem = stem(token);
        write_synced(
            &self.failed.join(format!("{stem}.error")),
            format!("{why}\n").as_bytes(),
        )?;
        fs::rename(token, self.failed.join(format!("{stem}.token")))?;
        sync_dir(&self.dir)
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "token".into(), |s| s.to_string_lossy().into_owned())
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, so the file is whole or absent.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_refused_tokens_leave_the_inbox() {
        let dir = std::env::temp_dir().join(format!("inbox-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let inbox = TokenInbox::open(&dir).unwrap();
        fs::write(dir.join("b-2.token"), "00").unwrap();
        fs::write(dir.join("a-1.token"), "00").unwrap();
        fs::write(dir.join("c.partial"), "00").unwrap();
        let pending = inbox.pending(|_| false).unwrap();
        assert_eq!(pending, vec![dir.join("a-1.token"), dir.join("b-2.token")]);
        inbox.accepted(&pending[0], &[1, 2, 3]).unwrap();
        inbox.refused(&pending[1], "expired").unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("done/a-1.receipt")).unwrap(),
            "010203\n"
        );
        assert!(dir.join("done/a-1.token").exists());
        assert!(fs::read_to_string(dir.join("failed/b-2.error"))
            .unwrap()
            .contains("expired"));
        assert!(inbox.pending(|_| false).unwrap().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    /// Issue #14, defect 7: with more than a group's worth of tokens waiting for meters without an
    /// account, the listing returned the same waiting files every time and later tokens starved.
    #[test]
    fn waiting_tokens_do_not_hold_back_the_others() {
        let dir = std::env::temp_dir().join(format!("inbox-starve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let inbox = TokenInbox::open(&dir).unwrap();
        for i in 0..MAX_GROUP + 3 {
            fs::write(dir.join(format!("A-{i:04}.token")), "00").unwrap();
        }
        fs::write(dir.join("B-0001.token"), "00").unwrap();
        let waiting = |p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("A-"))
        };
        assert_eq!(
            inbox.pending(waiting).unwrap(),
            vec![dir.join("B-0001.token")]
        );
        assert_eq!(inbox.pending(|_| false).unwrap().len(), MAX_GROUP);
        let _ = fs::remove_dir_all(&dir);
    }
}
