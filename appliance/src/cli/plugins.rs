//! `concentrator plugins list|verify|sign`: what would load from a plugin directory, whether one file
//! would load, and signing a file in a vendor's build pipeline.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use concentrator_plugin_host::{
    KeyError, LoadError, PluginLoader, PluginOrigin, PluginPolicy, SignatureError, SigningKey,
    TrustedKeys,
};

use crate::cli::CliError;

/// The appliance's plugin directory.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/concentrator/plugins";

/// `concentrator plugins …`
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// List the plugin files in a directory with their versions and whether they would load (signature,
    /// ownership, declaration and init checks, as the daemon does them).
    List {
        /// The plugin directory.
        #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
        dir: PathBuf,
        /// A trusted vendor public key (PEM); repeat for several.
        #[arg(long = "trusted", value_name = "PUBLIC_KEY_PEM", required = true)]
        trusted: Vec<PathBuf>,
    },
    /// Check one plugin file: its signature against the trusted keys, then its declaration and init.
    /// Prints OK, or exactly what is wrong.
    Verify {
        /// A trusted vendor public key (PEM); repeat for several.
        #[arg(long = "trusted", value_name = "PUBLIC_KEY_PEM", required = true)]
        trusted: Vec<PathBuf>,
        /// The plugin file (`lib<name>.so`); its signature is `<file>.sig`.
        file: PathBuf,
    },
    /// Sign a plugin file with a vendor's private key (Ed25519 or ECDSA P-256, PEM); writes `<file>.sig`.
    /// The signature binds the plugin's declared name and version, read from the file (give them with
    /// `--name` and `--plugin-version` for a file built for another architecture).
    Sign {
        /// The vendor's private key (PEM).
        #[arg(long, value_name = "PRIVATE_KEY_PEM")]
        key: PathBuf,
        /// The plugin's declared name, when the file cannot be loaded here.
        #[arg(long, requires = "plugin_version")]
        name: Option<String>,
        /// The plugin's declared version, when the file cannot be loaded here.
        #[arg(long, requires = "name")]
        plugin_version: Option<String>,
        /// The plugin file.
        file: PathBuf,
    },
}

/// Runs a `plugins` subcommand.
pub fn run(command: PluginsCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        PluginsCommand::List { dir, trusted } => list(&dir, &trusted, out),
        PluginsCommand::Verify { trusted, file } => verify(&file, &trusted, out),
        PluginsCommand::Sign {
            key,
            name,
            plugin_version,
            file,
        } => sign(&key, &file, name.zip(plugin_version), out),
    }
}

fn trusted_keys(paths: &[PathBuf]) -> Result<TrustedKeys, CliError> {
    TrustedKeys::from_pem_files(paths).map_err(key_error)
}

fn key_error(error: KeyError) -> CliError {
    match error {
        KeyError::Crypto { .. } => CliError::Failed(anyhow::Error::new(error)),
        other => CliError::usage(other.to_string()),
    }
}

fn list(dir: &Path, trusted: &[PathBuf], out: &mut dyn Write) -> Result<(), CliError> {
    let trusted = trusted_keys(trusted)?;
    let mut loader = PluginLoader::new(dir, trusted, PluginPolicy::default());
    let report = loader.load_all().map_err(|e| match e {
        LoadError::NotPrivate { .. } => CliError::usage(e.to_string()),
        other => CliError::Failed(anyhow::Error::new(other)),
    })?;
    writeln!(
        out,
        "{:<24} {:<12} {:<20} {:<8} STATUS",
        "NAME", "VERSION", "KIND", "API"
    )
    .context("writing the list")?;
    for plugin in &report.loaded {
        let info = plugin.info();
        let (file, key) = match &info.origin {
            PluginOrigin::File { path, key_id } => (path.display().to_string(), key_id.as_str()),
            PluginOrigin::Static => (String::from("built in"), "-"),
        };
        writeln!(
            out,
            "{:<24} {:<12} {:<20} {:<8} {} (signed by {key}) {file}",
            info.name,
            info.version,
            info.kind.name(),
            info.api_version.to_string(),
            plugin.status()
        )
        .context("writing the list")?;
    }
    for error in &report.refused {
        writeln!(
            out,
            "{:<24} {:<12} {:<20} {:<8} refused: {error}",
            "-", "-", "-", "-"
        )
        .context("writing the list")?;
    }
    writeln!(
        out,
        "{} would load, {} refused, in {}",
        report.loaded.len(),
        report.refused.len(),
        dir.display()
    )
    .context("writing the list")?;
    Ok(())
}

fn verify(file: &Path, trusted: &[PathBuf], out: &mut dyn Write) -> Result<(), CliError> {
    let trusted = trusted_keys(trusted)?;
    // The file's owner is the daemon's business; here the question is whether the file itself is good.
    let policy = PluginPolicy {
        require_root_owned: false,
        ..PluginPolicy::default()
    };
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut loader = PluginLoader::new(dir, trusted, policy);
    let plugin = loader.load_file(file).map_err(|e| match e {
        LoadError::Io { .. }
        | LoadError::Signature {
            source: SignatureError::Io { .. },
            ..
        } => CliError::Failed(anyhow::Error::new(e)),
        other => CliError::usage(other.to_string()),
    })?;
    let info = plugin.info();
    let key = match &info.origin {
        PluginOrigin::File { key_id, .. } => key_id.as_str(),
        PluginOrigin::Static => "-",
    };
    writeln!(
        out,
        "OK: {}: plugin `{}` {} ({} driver, API {}), signed by trusted key {key}",
        file.display(),
        info.name,
        info.version,
        info.kind,
        info.api_version
    )
    .context("writing the result")?;
    Ok(())
}

fn sign(
    key: &Path,
    file: &Path,
    declared: Option<(String, String)>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let key = SigningKey::from_pem_file(key).map_err(key_error)?;
    let (name, version) = match declared {
        Some(declared) => declared,
        None => concentrator_plugin_host::read_declaration(file).map_err(|e| {
            CliError::usage(format!(
                "{e}; to sign a file built for another architecture, give --name and --plugin-version"
            ))
        })?,
    };
    let sig_path = key.sign_file(file, &name, &version).map_err(|e| match e {
        SignatureError::Io { .. } => CliError::usage(e.to_string()),
        other => CliError::Failed(anyhow::Error::new(other)),
    })?;
    writeln!(
        out,
        "signed {} (plugin `{name}` {version}) with key {}: wrote {}",
        file.display(),
        key.id(),
        sig_path.display()
    )
    .context("writing the result")?;
    Ok(())
}
