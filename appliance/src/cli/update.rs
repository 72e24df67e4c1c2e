//! `concentrator update`: make a signed update bundle (the utility's release pipeline), apply one to the
//! inactive slot (root, on the gateway), make a healthy trial boot permanent, and show the slots
//! (crate::update has the format and the rules).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use concentrator_plugin_host::{SigningKey, TrustedKeys};

use super::CliError;
use crate::update::{self, Layout, Slot};

/// The release public key the image ships.
pub const RELEASE_KEY: &str = "/usr/share/concentrator/release.pub";

/// Where the slots are (the image's defaults).
#[derive(Debug, clap::Args)]
pub struct SlotArgs {
    /// The mounted boot partition.
    #[arg(long, default_value = "/boot/firmware")]
    boot: PathBuf,
    /// Slot A's device (default: partition 2 of the disk the running root is on).
    #[arg(long)]
    slot_a: Option<PathBuf>,
    /// Slot B's device (default: partition 3 of that disk).
    #[arg(long)]
    slot_b: Option<PathBuf>,
    /// The slot running now (default: from /proc/cmdline's root=LABEL=root-a|root-b).
    #[arg(long, value_parser = ["a", "b"])]
    running: Option<String>,
}

impl SlotArgs {
    /// The layout; the slots' devices are looked for only when `devices` (apply writes one; commit and
    /// status touch only the boot partition, and run where there is no /sys, as in the image build).
    fn layout(&self, devices: bool) -> Result<Layout, CliError> {
        let running = match self.running.as_deref() {
            Some("a") => Slot::A,
            Some("b") => Slot::B,
            _ => {
                let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
                if cmdline.contains("root=LABEL=root-b") {
                    Slot::B
                } else if cmdline.contains("root=LABEL=root-a") {
                    Slot::A
                } else {
                    return Err(CliError::usage(
                        "cannot tell the running slot: /proc/cmdline names neither root=LABEL=root-a nor root-b; give --running a or b",
                    ));
                }
            }
        };
        let (slot_a, slot_b) = match (&self.slot_a, &self.slot_b) {
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            (a, b) if !devices => (a.clone().unwrap_or_default(), b.clone().unwrap_or_default()),
            _ => {
                let found = root_disk_partitions(Path::new("/sys"));
                let pick = |given: &Option<PathBuf>, number: u32| {
                    given.clone().or_else(|| {
                        found
                            .as_ref()
                            .ok()
                            .and_then(|parts| parts.iter().find(|(n, _)| *n == number))
                            .map(|(_, dev)| dev.clone())
                    })
                };
                match (pick(&self.slot_a, 2), pick(&self.slot_b, 3)) {
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        return Err(CliError::usage(format!(
                            "cannot find the slots' partitions (2 and 3 of the disk the root is on): {}; give --slot-a and --slot-b",
                            found.err().unwrap_or_else(|| "the disk has no partition 2 or 3".into())
                        )))
                    }
                }
            }
        };
        Ok(Layout {
            boot: self.boot.clone(),
            slot_a,
            slot_b,
            running,
        })
    }
}

/// The partitions (number, /dev path) of the disk that holds the running root filesystem, found
/// through `sys` (sysfs): the slots are partitions 2 and 3 whatever their labels say, so a slot whose
/// write was cut short, and so has no label, is still found and written again.
fn root_disk_partitions(sys: &Path) -> Result<Vec<(u32, PathBuf)>, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").map_err(|e| format!("/: {e}"))?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let link = sys.join(format!("dev/block/{major}:{minor}"));
    let part = std::fs::canonicalize(&link).map_err(|e| {
        format!(
            "the root's device {major}:{minor} ({}): {e}",
            link.display()
        )
    })?;
    let disk = part
        .parent()
        .ok_or_else(|| format!("{} has no disk above it", part.display()))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(disk).map_err(|e| format!("{}: {e}", disk.display()))? {
        let Ok(entry) = entry else { continue };
        let Ok(number) = std::fs::read_to_string(entry.path().join("partition")) else {
            continue;
        };
        if let Ok(n) = number.trim().parse::<u32>() {
            found.push((n, Path::new("/dev").join(entry.file_name())));
        }
    }
    if found.is_empty() {
        return Err(format!(
            "the root is not on a partitioned disk ({})",
            part.display()
        ));
    }
    found.sort();
    Ok(found)
}

/// Subcommands of `concentrator update`.
#[derive(Debug, clap::Subcommand)]
pub enum UpdateCommand {
    /// Makes a bundle of a root filesystem image, a kernel and an initrd, signed with the release key.
    Make {
        /// The release private key (PEM, Ed25519 or ECDSA P-256, e.g. from `openssl genpkey -algorithm ed25519`).
        #[arg(long)]
        key: PathBuf,
        /// The version it installs.
        #[arg(long)]
        version: String,
        /// The root filesystem image (ext4).
        #[arg(long)]
        root: PathBuf,
        /// The kernel.
        #[arg(long)]
        kernel: PathBuf,
        /// The initrd.
        #[arg(long)]
        initrd: PathBuf,
        /// The bundle to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a bundle's signature, writes it to the inactive slot and sets up one trial boot of it
    /// (reboot with `systemctl reboot '0 tryboot'`); nothing is written when the check fails.
    Apply {
        /// The bundle.
        bundle: PathBuf,
        /// The release public key(s) trusted.
        #[arg(long, default_value = RELEASE_KEY)]
        trusted: Vec<PathBuf>,
        #[command(flatten)]
        slots: SlotArgs,
    },
    /// After a healthy trial boot: makes the running slot permanent.
    Commit {
        #[command(flatten)]
        slots: SlotArgs,
    },
    /// Which slot boots, and which a trial boot would try.
    Status {
        #[command(flatten)]
        slots: SlotArgs,
    },
}

fn name(s: Option<Slot>) -> &'static str {
    match s {
        Some(Slot::A) => "slot A",
        Some(Slot::B) => "slot B",
        None => "none",
    }
}

/// Runs `concentrator update ...`.
pub fn run(command: UpdateCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        UpdateCommand::Make {
            key,
            version,
            root,
            kernel,
            initrd,
            out: bundle,
        } => {
            let key = SigningKey::from_pem_file(&key)
                .map_err(|e| CliError::usage(format!("the release key: {e}")))?;
            let h = update::make(&key, &version, &root, &kernel, &initrd, &bundle)
                .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
            writeln!(
                out,
                "{}: version {} ({} MiB of root image), signed with key {}",
                bundle.display(),
                h.version,
                h.parts[0].0 / (1024 * 1024),
                key.id()
            )
            .context("writing")?;
        }
        UpdateCommand::Apply {
            bundle,
            trusted,
            slots,
        } => {
            let keys = TrustedKeys::from_pem_files(&trusted)
                .map_err(|e| CliError::usage(format!("the trusted release key: {e}")))?;
            let layout = slots.layout(true)?;
            let target = name(Some(layout.running.other()));
            let mut shown = None;
            let mut progress = |done: u64, total: u64| {
                // Every tenth, on stderr: the root image takes minutes on an SD card.
                let tenth = done.saturating_mul(10) / total.max(1);
                if shown != Some(tenth) {
                    shown = Some(tenth);
                    eprintln!(
                        "writing {target}: {} % ({} of {} MiB)",
                        tenth * 10,
                        done / (1024 * 1024),
                        total / (1024 * 1024)
                    );
                }
            };
            let (slot, version) = update::apply(&bundle, &keys, &layout, &mut progress)
                .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
            writeln!(
                out,
                "version {version} written to {}; it boots once on trial at the next `systemctl reboot '0 tryboot'`, and stays only when the daemon reports healthy (`concentrator update commit`)",
                name(Some(slot))
            )
            .context("writing")?;
        }
        UpdateCommand::Commit { slots } => {
            let layout = slots.layout(false)?;
            update::commit(&layout).map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
            writeln!(out, "{} is permanent now", name(Some(layout.running))).context("writing")?;
        }
        UpdateCommand::Status { slots } => {
            let (permanent, trial) = update::boot_slots(&slots.boot);
            writeln!(
                out,
                "boots {}; a trial boot would try {}",
                name(permanent),
                name(trial)
            )
            .context("writing")?;
            for slot in [Slot::A, Slot::B] {
                let version = update::slot_version(&slots.boot, slot).map_or_else(
                    || "no version recorded".to_string(),
                    |v| format!("version {v}"),
                );
                writeln!(out, "{}: {version}", name(Some(slot))).context("writing")?;
            }
        }
    }
    Ok(())
}
