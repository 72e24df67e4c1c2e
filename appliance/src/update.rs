//! Signed A/B updates (docs/ARCHITECTURE.md, *Signed A/B updates with rollback*): the bundle, its check
//! before anything is written, the write into the inactive slot, the trial boot files, and the commit
//! that makes a healthy trial permanent.
//!
//! A bundle (`concentrator-update-<version>.cub`) is
//!
//! ```text
//! "CUB1" ‖ header length (u32 BE) ‖ header (text) ‖ signature length (u32 BE) ‖ signature (text)
//!        ‖ root filesystem image ‖ kernel ‖ initrd
//! ```
//!
//! The header names the version and the three parts' sizes and SHA-256s; the signature is the plugin
//! signature format (`concentrator_plugin_host::Signature`, Ed25519 or ECDSA P-256) over the header,
//! under the name `concentrator-update` and the version, by the utility's release key. `apply` checks the
//! signature and the header against the slots before it writes a byte; it streams the root image into
//! the inactive slot and the kernel and initrd into new files of the boot partition while hashing them,
//! and only when all three hashes match does it write `tryboot.txt`, the one file that makes the next
//! (`tryboot`) boot try the new slot. `config.txt`, which names the permanent slot, changes only at
//! `commit`. A power cut anywhere before that leaves the old slot booting.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use concentrator_plugin_host::{Signature, SigningKey, TrustedKeys};
use openssl::sha::Sha256;

/// The name the release signature binds.
pub const SIGNED_NAME: &str = "concentrator-update";
const MAGIC: &[u8; 4] = b"CUB1";
const HEADER_MAGIC: &str = "concentrator-update 1";
/// Headers and signatures are short; a larger length is a corrupt or hostile file.
const MAX_TEXT: u32 = 64 * 1024;

/// A slot of the two root partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `root-a`.
    A,
    /// `root-b`.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

/// Where the slots and the boot partition are.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The mounted boot (FAT) partition.
    pub boot: PathBuf,
    /// Slot A's block device (or an image file in tests).
    pub slot_a: PathBuf,
    /// Slot B's.
    pub slot_b: PathBuf,
    /// The slot running now.
    pub running: Slot,
}

impl Layout {
    fn device(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }
}

/// A bundle's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The version it installs.
    pub version: String,
    /// (size, SHA-256) of the root image, the kernel and the initrd.
    pub parts: [(u64, [u8; 32]); 3],
}

const PART_NAMES: [&str; 3] = ["root", "kernel", "initrd"];

impl Header {
    fn to_text(&self) -> String {
        let mut t = format!("{HEADER_MAGIC}\nversion {}\n", self.version);
        for (name, (size, sha)) in PART_NAMES.iter().zip(self.parts.iter()) {
            t.push_str(&format!("{name} {size} {}\n", hex::encode(sha)));
        }
        t
    }

    fn parse(text: &str) -> Result<Header, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER_MAGIC) {
            return Err(format!("the header does not start with `{HEADER_MAGIC}`"));
        }
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix("version "))
            .ok_or("the header has no version line")?
            .to_string();
        let mut parts = [(0u64, [0u8; 32]); 3];
        for (i, name) in PART_NAMES.iter().enumerate() {
            let line = lines
                .next()
                .ok_or_else(|| format!("the header has no {name} line"))?;
            let mut f = line.split(' ');
            if f.next() != Some(name) {
                return Err(format!("the header's line {line:?} is not the {name} line"));
            }
            let size = f
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("the {name} line has no size"))?;
            let mut sha = [0u8; 32];
            hex::decode_to_slice(f.next().unwrap_or(""), &mut sha)
                .map_err(|_| format!("the {name} line's SHA-256 is not 64 hex digits"))?;
            parts[i] = (size, sha);
        }
        Ok(Header { version, parts })
    }
}

fn sha_file(path: &Path) -> Result<(u64, [u8; 32]), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if k == 0 {
            return Ok((n, h.finish()));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// Makes a bundle of `root`, `kernel` and `initrd` for `version`, signed with `key`, at `out`.
pub fn make(
    key: &SigningKey,
    version: &str,
    root: &Path,
    kernel: &Path,
    initrd: &Path,
    out: &Path,
) -> Result<Header, String> {
    let mut head = vec![0u8; HELD];
    std::fs::File::open(root)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("{}: {e}", root.display()))?;
    if ext4_label(&head).is_none() {
        return Err(format!(
            "{} is not an ext4 filesystem: the root must be the image build's root.ext4",
            root.display()
        ));
    }
    let parts = [sha_file(root)?, sha_file(kernel)?, sha_file(initrd)?];
    let header = Header {
        version: version.to_string(),
        parts,
    };
    let text = header.to_text();
    let sig = key
        .sign(text.as_bytes(), SIGNED_NAME, version)
        .map_err(|e| format!("signing the bundle: {e}"))?
        .to_string();
    let mut f = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let w = |f: &mut std::fs::File, b: &[u8]| {
        f.write_all(b)
            .map_err(|e| format!("{}: {e}", out.display()))
    };
    w(&mut f, MAGIC)?;
    w(&mut f, &(text.len() as u32).to_be_bytes())?;
    w(&mut f, text.as_bytes())?;
    w(&mut f, &(sig.len() as u32).to_be_bytes())?;
    w(&mut f, sig.as_bytes())?;
    for p in [root, kernel, initrd] {
        let mut src = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        std::io::copy(&mut src, &mut f).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    f.sync_all()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(header)
}

fn read_text(r: &mut impl Read, what: &str) -> Result<String, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| format!("the bundle ends before its {what}: {e}"))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_TEXT {
        return Err(format!(
            "the bundle's {what} claims {len} octets: not an update bundle"
        ));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)
        .map_err(|e| format!("the bundle ends inside its {what}: {e}"))?;
    String::from_utf8(buf).map_err(|_| format!("the bundle's {what} is not text"))
}

/// Opens a bundle and checks its signature; the header and the reader positioned at the payload.
pub fn open_verified(
    path: &Path,
    trusted: &TrustedKeys,
) -> Result<(Header, std::io::BufReader<std::fs::File>), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = std::io::BufReader::new(f);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .map_err(|_| format!("{} is not an update bundle (too short)", path.display()))?;
    if &magic != MAGIC {
        return Err(format!(
            "{} is not an update bundle (it does not start with CUB1)",
            path.display()
        ));
    }
    let text = read_text(&mut r, "header")?;
    let sig = Signature::parse(&read_text(&mut r, "signature")?)
        .map_err(|e| format!("the bundle's signature: {e}"))?;
    let key = trusted.verify(text.as_bytes(), &sig).map_err(|e| match e {
        // In the release key's words, not a plugin vendor's.
        concentrator_plugin_host::SignatureError::UnknownKey { key_id, trusted } => format!(
            "the bundle's signature does not verify: it is signed with key {key_id}, which is not the utility's release key this gateway trusts ({trusted}, /usr/share/concentrator/release.pub); nothing was written: ask the utility for a bundle signed with its release key"
        ),
        e => format!("the bundle's signature does not verify: {e}; nothing was written (is it from the utility's release key?)"),
    })?;
    if sig.plugin != SIGNED_NAME {
        return Err(format!(
            "the signature is for {:?}, not an update; nothing was written",
            sig.plugin
        ));
    }
    let header = Header::parse(&text).map_err(|e| format!("the bundle's {e}"))?;
    if header.version != sig.version {
        return Err(format!(
            "the header says version {} but the signature binds {}; nothing was written",
            header.version, sig.version
        ));
    }
    log::info!(
        "update bundle {} version {} signed by {key}",
        path.display(),
        header.version
    );
    Ok((header, r))
}

/// The size of a slot (a block device's or an image file's).
fn slot_size(path: &Path) -> Result<u64, String> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(std::io::SeekFrom::End(0))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Copies `len` octets of `r` into `w`, adding them to `h`; `progress` is told the octets done.
fn copy_hashed(
    r: &mut impl Read,
    w: &mut impl Write,
    h: &mut Sha256,
    len: u64,
    what: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<(), String> {
    let mut left = len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        r.read_exact(&mut buf[..want])
            .map_err(|e| format!("the bundle ends inside the {what}: {e}"))?;
        h.update(&buf[..want]);
        w.write_all(&buf[..want])
            .map_err(|e| format!("writing the {what}: {e}"))?;
        left -= want as u64;
        progress(len - left);
    }
    Ok(())
}

/// The octets of a root image held back until the whole image is written and verified: the first
/// 4 KiB hold the ext4 superblock (at 1024), so a slot whose write was cut short has no filesystem
/// for `root=LABEL=` to find, and never a second filesystem under the running slot's label.
const HELD: usize = 4096;
const SB: usize = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// CRC-32C (Castagnoli) as ext4 keeps it: seeded by the caller, no final inversion.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The volume label of the ext4 filesystem whose first octets are `head`; `None` if it is not ext4.
pub fn ext4_label(head: &[u8]) -> Option<String> {
    let sb = head.get(SB..SB + 1024)?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != EXT4_MAGIC {
        return None;
    }
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Gives the ext4 filesystem whose first octets are `head` the label `label`, and its superblock a
/// new checksum where the filesystem keeps one (what `e2label` does).
pub fn set_ext4_label(head: &mut [u8], label: &str) -> Result<(), String> {
    if ext4_label(head).is_none() {
        return Err("the root image is not an ext4 filesystem".into());
    }
    if label.len() > 16 {
        return Err(format!(
            "the label {label:?} is longer than ext4's 16 octets"
        ));
    }
    let sb = &mut head[SB..SB + 1024];
    sb[0x78..0x88].fill(0);
    sb[0x78..0x78 + label.len()].copy_from_slice(label.as_bytes());
    if le32(sb, 0x64) & RO_COMPAT_METADATA_CSUM != 0 {
        let sum = crc32c(!0, &sb[..0x3FC]);
        sb[0x3FC..].copy_from_slice(&sum.to_le_bytes());
    }
    Ok(())
}

/// The kernel command line for `target`: the running slot's own (`cmdline-x.txt`, or the image's
/// `cmdline.txt`) with its root naming the target slot, so the console and the other settings the
/// image was built with carry over; a plain line if there is none.
fn cmdline_for(boot: &Path, running: Slot, target: Slot) -> String {
    let from = format!("root=LABEL=root-{}", running.letter());
    let to = format!("root=LABEL=root-{}", target.letter());
    for name in [
        format!("cmdline-{}.txt", running.letter()),
        "cmdline.txt".into(),
    ] {
        if let Ok(text) = std::fs::read_to_string(boot.join(&name)) {
            let line = text.lines().next().unwrap_or("").trim();
            if line.split(' ').any(|w| w == from) {
                let words: Vec<&str> = line
                    .split(' ')
                    .map(|w| if w == from { to.as_str() } else { w })
                    .collect();
                return format!("{}\n", words.join(" "));
            }
        }
    }
    format!("console=serial0,115200 {to} rootfstype=ext4 rootwait\n")
}

/// Flushes the whole filesystem that holds `dir` (syncfs(2)). On the FAT boot partition an fsync of
/// the directory is not enough: the HIL test's power cut after a commit found the file allocation
/// table written and the directory entry not, leaving `config.txt` pointing at a freed cluster.
fn sync_fs(dir: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: syncfs takes an open descriptor, which `d` holds for the length of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(format!(
            "flushing {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Writes `data` to `dir/name` as a new file: a temporary file, fsync, rename, the filesystem flushed.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.new"));
    let path = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    sync_fs(dir)
}

/// Writes `data` over `dir/name` where the file has exactly that length: the same clusters, no change
/// to the allocation table or the directory but the time, so a power cut leaves the old or the new
/// text and never a file without its data (FAT has no atomic rename). A file of another length, or
/// none, is written as a new file.
fn overwrite_in_place(dir: &Path, name: &str, data: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == data.len() as u64 => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            f.write_all(data)
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            sync_fs(dir)
        }
        _ => write_atomic(dir, name, data),
    }
}

/// The boot configuration that boots `slot` (the firmware's config.txt format): the slot's kernel,
/// initramfs and command line, with the settings the image's firmware needs (64-bit, the serial
/// console, Debian's upstream kernel and device trees).
pub fn boot_config(slot: Slot) -> String {
    let x = slot.letter();
    format!(
        "# Written by `concentrator update`: boots slot {}.\narm_64bit=1\nenable_uart=1\nupstream_kernel=1\nkernel=vmlinuz-{x}\ninitramfs initrd-{x}.img followkernel\ncmdline=cmdline-{x}.txt\n",
        x.to_uppercase()
    )
}

/// The file on the boot partition that names the version a slot holds.
fn version_file(slot: Slot) -> String {
    format!("version-{}.txt", slot.letter())
}

/// The version slot `slot` holds, as the image build or the last update wrote it.
pub fn slot_version(boot: &Path, slot: Slot) -> Option<String> {
    let text = std::fs::read_to_string(boot.join(version_file(slot))).ok()?;
    let v = text.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Applies a bundle: checked, written to the inactive slot, and set up for one trial boot (see the
/// module documentation). `progress` is told the root image's octets written and their total.
/// Returns the slot written and the version.
pub fn apply(
    bundle: &Path,
    trusted: &TrustedKeys,
    layout: &Layout,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Slot, String), String> {
    use std::io::{Seek, SeekFrom};
    let (header, mut r) = open_verified(bundle, trusted)?;
    let target = layout.running.other();
    let name = target.letter().to_uppercase();
    let device = layout.device(target);
    let room = slot_size(device)?;
    let (root_len, root_sha) = header.parts[0];
    if root_len > room {
        return Err(format!(
            "the root image is {root_len} octets but slot {name} ({}) holds {room}; nothing was written",
            device.display()
        ));
    }
    if root_len < HELD as u64 {
        return Err(format!(
            "the root image is {root_len} octets, too small for a filesystem; nothing was written"
        ));
    }
    let mut h = Sha256::new();
    let mut head = vec![0u8; HELD];
    r.read_exact(&mut head)
        .map_err(|e| format!("the bundle ends inside the root image: {e}"))?;
    h.update(&head);
    if ext4_label(&head).is_none() {
        return Err(
            "the root image is not an ext4 filesystem; nothing was written (make the bundle from the image build's root.ext4)".into(),
        );
    }
    // The trial file of an earlier, unfinished update must not boot a half-written slot, nor the
    // slot's old filesystem be found while the new one is written.
    let _ = std::fs::remove_file(layout.boot.join("tryboot.txt"));
    let _ = std::fs::remove_file(layout.boot.join(version_file(target)));
    let mut dev = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| format!("{}: {e}", device.display()))?;
    let io = |e: std::io::Error| format!("{}: {e}", device.display());
    dev.write_all(&[0u8; HELD]).map_err(io)?;
    dev.sync_all().map_err(io)?;
    let held = HELD as u64;
    progress(held, root_len);
    copy_hashed(
        &mut r,
        &mut dev,
        &mut h,
        root_len - held,
        "root image",
        &mut |done| progress(held + done, root_len),
    )?;
    dev.sync_all().map_err(io)?;
    let got = h.finish();
    if got != root_sha {
        return Err(format!(
            "the root image's SHA-256 is {} but the signed header says {}: the bundle is damaged; slot {name} is not used (config.txt and tryboot.txt unchanged)",
            hex::encode(got),
            hex::encode(root_sha),
        ));
    }
    // Verified: the superblock goes in last, under the slot's own label.
    set_ext4_label(&mut head, &format!("root-{}", target.letter()))?;
    dev.seek(SeekFrom::Start(0)).map_err(io)?;
    dev.write_all(&head).map_err(io)?;
    dev.sync_all().map_err(io)?;
    let x = target.letter();
    for (i, file) in [
        (1usize, format!("vmlinuz-{x}")),
        (2, format!("initrd-{x}.img")),
    ] {
        let (len, sha) = header.parts[i];
        let mut data = Vec::new();
        let mut h = Sha256::new();
        copy_hashed(&mut r, &mut data, &mut h, len, PART_NAMES[i], &mut |_| {})?;
        if h.finish() != sha {
            return Err(format!(
                "the {}'s SHA-256 does not match the signed header: the bundle is damaged; nothing boots from it",
                PART_NAMES[i]
            ));
        }
        write_atomic(&layout.boot, &file, &data)?;
    }
    write_atomic(
        &layout.boot,
        &format!("cmdline-{x}.txt"),
        cmdline_for(&layout.boot, layout.running, target).as_bytes(),
    )?;
    write_atomic(
        &layout.boot,
        &version_file(target),
        format!("{}\n", header.version).as_bytes(),
    )?;
    write_atomic(&layout.boot, "tryboot.txt", boot_config(target).as_bytes())?;
    Ok((target, header.version))
}

/// After a healthy trial boot of the slot now running: makes it permanent (config.txt names it) and
/// removes the trial file.
pub fn commit(layout: &Layout) -> Result<(), String> {
    // Every slot's config.txt has the same length (only the slot's letter differs), so the switch is
    // one sector written in place.
    overwrite_in_place(
        &layout.boot,
        "config.txt",
        boot_config(layout.running).as_bytes(),
    )?;
    if std::fs::remove_file(layout.boot.join("tryboot.txt")).is_ok() {
        sync_fs(&layout.boot)?;
    }
    Ok(())
}

/// Which slot the boot partition makes permanent, and which it would try next (`tryboot`).
pub fn boot_slots(boot: &Path) -> (Option<Slot>, Option<Slot>) {
    let slot_of = |name: &str| {
        let text = std::fs::read_to_string(boot.join(name)).ok()?;
        if text.contains("kernel=vmlinuz-a") {
            Some(Slot::A)
        } else if text.contains("kernel=vmlinuz-b") {
            Some(Slot::B)
        } else {
            None
        }
    };
    (slot_of("config.txt"), slot_of("tryboot.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use concentrator_plugin_host::{generate_key_pem, Algorithm};
    use std::process::Command;

    struct Rig {
        dir: PathBuf,
        key: SigningKey,
        trusted: TrustedKeys,
        layout: Layout,
    }

    /// Runs an e2fsprogs program; fails the test, naming the program and its output, unless it
    /// succeeds (and with the install command when it is missing).
    fn e2fs(program: &str, args: &[&std::ffi::OsStr]) {
        let out = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("{program} cannot run ({e}): install e2fsprogs (apt-get install e2fsprogs)")
            });
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An ext4 filesystem image of `kib` KiB labelled `label`, holding `content` in `/version`
    /// (mkfs.ext4 from e2fsprogs, as the image build makes the root).
    fn ext4(path: &Path, kib: u64, label: &str, content: &str) {
        let src = path.with_extension("src");
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("version"), content).unwrap();
        let size = format!("{kib}k");
        let args = ["-q", "-F", "-O", "^has_journal", "-L", label, "-d"];
        let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        argv.extend([src.as_os_str(), path.as_os_str(), size.as_ref()]);
        e2fs("mkfs.ext4", &argv);
        let _ = std::fs::remove_dir_all(&src);
    }

    fn label_of(path: &Path) -> Option<String> {
        let mut head = vec![0u8; HELD];
        std::fs::File::open(path)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        ext4_label(&head)
    }

    /// e2fsck's verdict on an image: a filesystem whose superblock checksum is wrong fails.
    fn fsck_clean(path: &Path) {
        e2fs("e2fsck", &["-fn".as_ref(), path.as_os_str()]);
    }

    fn rig(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("update-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("boot")).unwrap();
        let (private, public) = generate_key_pem(Algorithm::Ed25519).unwrap();
        let key = SigningKey::from_pem(&private, "release.key").unwrap();
        let trusted = TrustedKeys::from_pem(&public, "release.pub").unwrap();
        ext4(&dir.join("root-a.img"), 2048, "root-a", "0.2.0");
        std::fs::write(dir.join("root-b.img"), vec![0xEE; 2048 * 1024]).unwrap();
        std::fs::write(dir.join("boot/config.txt"), boot_config(Slot::A)).unwrap();
        std::fs::write(
            dir.join("boot/cmdline-a.txt"),
            "console=tty0 console=ttyS1,115200 root=LABEL=root-a rw fsck.repair=yes net.ifnames=0 rootwait\n",
        )
        .unwrap();
        let layout = Layout {
            boot: dir.join("boot"),
            slot_a: dir.join("root-a.img"),
            slot_b: dir.join("root-b.img"),
            running: Slot::A,
        };
        Rig {
            dir,
            key,
            trusted,
            layout,
        }
    }

    /// A release's parts: its root filesystem (labelled as the image build labels it), kernel, initrd.
    fn parts(r: &Rig, root_kib: u64, version: &str) -> (PathBuf, PathBuf, PathBuf) {
        let root = r.dir.join(format!("root-{version}.ext4"));
        ext4(&root, root_kib, "root-a", version);
        std::fs::write(r.dir.join("vmlinuz"), format!("kernel {version}")).unwrap();
        std::fs::write(r.dir.join("initrd"), format!("initrd {version}")).unwrap();
        (root, r.dir.join("vmlinuz"), r.dir.join("initrd"))
    }

    fn quiet(_: u64, _: u64) {}

    #[test]
    fn a_commit_rewrites_config_txt_in_place() {
        // The same length for both slots: commit writes the same clusters, never a new file.
        assert_eq!(boot_config(Slot::A).len(), boot_config(Slot::B).len());
        let r = rig("commit");
        let config = r.layout.boot.join("config.txt");
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&config);
        std::fs::write(r.layout.boot.join("tryboot.txt"), boot_config(Slot::B)).unwrap();
        commit(&Layout {
            running: Slot::B,
            ..r.layout.clone()
        })
        .unwrap();
        assert_eq!(inode(&config), before, "the same file, written over");
        assert_eq!(boot_slots(&r.layout.boot), (Some(Slot::B), None));
        let _ = std::fs::remove_dir_all(&r.dir);
    }

    #[test]
    fn crc32c_is_castagnoli_as_ext4_keeps_it() {
        // The standard check value of CRC-32C is the inverted raw register.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_good_bundle_writes_the_other_slot_under_its_own_label_and_boots_it_once_until_committed() {
        let r = rig("good");
        let (root, k, i) = parts(&r, 1024, "0.3.0");
        let out = r.dir.join("u.cub");
        make(&r.key, "0.3.0", &root, &k, &i, &out).unwrap();
        let mut seen = Vec::new();
        let (slot, version) =
            apply(&out, &r.trusted, &r.layout, &mut |d, t| seen.push((d, t))).unwrap();
        assert_eq!((slot, version.as_str()), (Slot::B, "0.3.0"));
        let total = 1024 * 1024;
        assert_eq!(seen.last(), Some(&(total, total)), "progress to the end");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        // The slot holds the release's filesystem, relabelled root-b, and e2fsck finds it clean
        // (the superblock's checksum made again).
        assert_eq!(label_of(&r.layout.slot_b).as_deref(), Some("root-b"));
        assert_eq!(label_of(&r.layout.slot_a).as_deref(), Some("root-a"));
        let written = std::fs::read(&r.layout.slot_b).unwrap();
        let original = std::fs::read(&root).unwrap();
        assert_eq!(&written[HELD..original.len()], &original[HELD..]);
        let copy = r.dir.join("slot-b-copy.ext4");
        std::fs::write(&copy, &written[..original.len()]).unwrap();
        fsck_clean(&copy);
        assert_eq!(
            std::fs::read(r.layout.boot.join("vmlinuz-b")).unwrap(),
            b"kernel 0.3.0"
        );
        assert_eq!(boot_slots(&r.layout.boot), (Some(Slot::A), Some(Slot::B)));
        assert_eq!(
            slot_version(&r.layout.boot, Slot::B).as_deref(),
            Some("0.3.0")
        );
        // The running slot's command line, with the new root.
        assert_eq!(
            std::fs::read_to_string(r.layout.boot.join("cmdline-b.txt")).unwrap(),
            "console=tty0 console=ttyS1,115200 root=LABEL=root-b rw fsck.repair=yes net.ifnames=0 rootwait\n"
        );
        // The trial boot was healthy: B becomes permanent.
        let on_b = Layout {
            running: Slot::B,
            ..r.layout.clone()
        };
        commit(&on_b).unwrap();
        assert_eq!(boot_slots(&r.layout.boot), (Some(Slot::B), None));
        // The next update goes to A, with B's command line.
        let (root4, k, i) = parts(&r, 1024, "0.4.0");
        make(&r.key, "0.4.0", &root4, &k, &i, &out).unwrap();
        assert_eq!(
            apply(&out, &r.trusted, &on_b, &mut quiet).unwrap().0,
            Slot::A
        );
        assert_eq!(label_of(&r.layout.slot_a).as_deref(), Some("root-a"));
        assert!(std::fs::read_to_string(r.layout.boot.join("cmdline-a.txt"))
            .unwrap()
            .contains("ttyS1,115200 root=LABEL=root-a rw"));
        let _ = std::fs::remove_dir_all(&r.dir);
    }

    #[test]
    fn a_bad_signature_or_a_damaged_payload_never_makes_the_new_slot_bootable() {
        let r = rig("bad");
        let (root, k, i) = parts(&r, 1024, "0.3.0");
        let out = r.dir.join("u.cub");
        make(&r.key, "0.3.0", &root, &k, &i, &out).unwrap();
        let before = std::fs::read(&r.layout.slot_b).unwrap();

        // Another key: refused before anything is written.
        let (other, _) = generate_key_pem(Algorithm::Ed25519).unwrap();
        let forged = r.dir.join("forged.cub");
        make(
            &SigningKey::from_pem(&other, "x").unwrap(),
            "0.3.0",
            &root,
            &k,
            &i,
            &forged,
        )
        .unwrap();
        let e = apply(&forged, &r.trusted, &r.layout, &mut quiet).unwrap_err();
        assert!(
            e.contains("does not verify") && e.contains("nothing was written"),
            "{e}"
        );
        // A header changed after signing.
        let mut bytes = std::fs::read(&out).unwrap();
        let pos = bytes.windows(5).position(|w| w == b"0.3.0").unwrap();
        bytes[pos + 4] = b'9';
        std::fs::write(&forged, &bytes).unwrap();
        assert!(apply(&forged, &r.trusted, &r.layout, &mut quiet)
            .unwrap_err()
            .contains("does not verify"));
        assert_eq!(
            std::fs::read(&r.layout.slot_b).unwrap(),
            before,
            "slot B untouched"
        );

        // A payload damaged in transit: written, but the slot has no filesystem, no trial boot file,
        // config.txt unchanged.
        let mut bytes = std::fs::read(&out).unwrap();
        let n = bytes.len();
        bytes[n - 300_000] ^= 0xFF;
        std::fs::write(&forged, &bytes).unwrap();
        let e = apply(&forged, &r.trusted, &r.layout, &mut quiet).unwrap_err();
        assert!(e.contains("damaged"), "{e}");
        assert_eq!(boot_slots(&r.layout.boot), (Some(Slot::A), None));
        assert_eq!(label_of(&r.layout.slot_b), None);

        // Too big for the slot: refused before writing.
        let (big, k, i) = parts(&r, 3072, "0.4.0");
        make(&r.key, "0.4.0", &big, &k, &i, &out).unwrap();
        let e = apply(&out, &r.trusted, &r.layout, &mut quiet).unwrap_err();
        assert!(
            e.contains("holds") && e.contains("nothing was written"),
            "{e}"
        );
        // A root that is not a filesystem: the release pipeline is told.
        std::fs::write(&big, vec![0x5A; 64 * 1024]).unwrap();
        assert!(make(&r.key, "0.4.0", &big, &k, &i, &out)
            .unwrap_err()
            .contains("not an ext4 filesystem"));
        // Not a bundle at all.
        std::fs::write(&forged, b"hello").unwrap();
        assert!(apply(&forged, &r.trusted, &r.layout, &mut quiet)
            .unwrap_err()
            .contains("not an update bundle"));
        let _ = std::fs::remove_dir_all(&r.dir);
    }

    #[test]
    fn a_write_cut_short_leaves_no_filesystem_in_the_slot_and_the_old_slot_booting() {
        let r = rig("cut");
        // Slot B held an older release under its label: a cut write must not leave it findable
        // half-overwritten, nor a second "root-a".
        ext4(&r.layout.slot_b, 2048, "root-b", "0.1.0");
        let (root, k, i) = parts(&r, 1024, "0.3.0");
        let out = r.dir.join("u.cub");
        make(&r.key, "0.3.0", &root, &k, &i, &out).unwrap();
        // A power cut in the middle of the payload: the bundle as far as it got.
        let whole = std::fs::read(&out).unwrap();
        let cut = r.dir.join("cut.cub");
        std::fs::write(&cut, &whole[..whole.len() - 600_000]).unwrap();
        let e = apply(&cut, &r.trusted, &r.layout, &mut quiet).unwrap_err();
        assert!(e.contains("ends inside"), "{e}");
        assert_eq!(boot_slots(&r.layout.boot), (Some(Slot::A), None));
        assert_eq!(
            label_of(&r.layout.slot_b),
            None,
            "no filesystem in the cut slot"
        );
        assert_eq!(slot_version(&r.layout.boot, Slot::B), None);
        apply(&out, &r.trusted, &r.layout, &mut quiet).unwrap();
        assert_eq!(boot_slots(&r.layout.boot), (Some(Slot::A), Some(Slot::B)));
        assert_eq!(label_of(&r.layout.slot_b).as_deref(), Some("root-b"));
        let _ = std::fs::remove_dir_all(&r.dir);
    }
}
