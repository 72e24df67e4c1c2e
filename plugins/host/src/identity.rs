//! The loader's checks of a signed plugin's identity (name and version bound by the signature, no
//! downgrade below the recorded highest version) and its start in a child process (the isolated mode).

use std::path::Path;
use std::sync::Arc;

use crate::child::{ChildOptions, Supervisor};
use crate::declaration::{DriverKind, Entries};
use crate::error::LoadError;
use crate::loader::{sealed_copy, PluginLoader};
use crate::plugin::{Plugin, PluginInfo, PluginOrigin};
use crate::signature::Verified;
use crate::versions::compare_versions;

impl PluginLoader {
    /// Refuses a version lower than the highest recorded, unless the plugin may be downgraded.
    pub(crate) fn check_downgrade(
        &self,
        path: &Path,
        name: &str,
        version: &str,
    ) -> Result<(), LoadError> {
        let Some(store) = &self.policy.versions else {
            return Ok(());
        };
        match store.highest(name) {
            Some(highest)
                if compare_versions(version, &highest) == std::cmp::Ordering::Less
                    && !self.policy.allow_downgrade.contains(name) =>
            {
                Err(LoadError::Downgrade {
                    path: path.to_owned(),
                    name: name.to_owned(),
                    version: version.to_owned(),
                    highest,
                    store: store.path().display().to_string(),
                })
            }
            Some(highest) if compare_versions(version, &highest) == std::cmp::Ordering::Less => {
                log::warn!(target: "concentrator::plugins", "plugin `{name}` {version} is older than {highest}, loaded because the configuration allows a downgrade");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn record_version(&self, name: &str, version: &str) {
        if let Some(store) = &self.policy.versions {
            if let Err(e) = store.record(name, version) {
                log::error!(target: "concentrator::plugins", "cannot record plugin `{name}` {version} in {}: {e}; a downgrade of it will not be noticed", store.path().display());
            }
        }
    }

    /// Starts a verified plugin in a child process of its own (the isolated mode).
    pub(crate) fn start_isolated(
        &mut self,
        path: &Path,
        verified: &Verified,
        options: ChildOptions,
    ) -> Result<Arc<Plugin>, LoadError> {
        if let Some(existing) = self.plugins.iter().find(|p| p.name() == verified.plugin) {
            return Err(LoadError::Duplicate {
                origin: path.display().to_string(),
                name: verified.plugin.clone(),
                existing: existing.info().origin.to_string(),
            });
        }
        let memory_file = sealed_copy(path, &verified.bytes)?;
        let label = path.display().to_string();
        let supervisor = Supervisor::start(
            &verified.plugin,
            &verified.version,
            &label,
            memory_file,
            options,
        )
        .map_err(|reason| LoadError::Isolated {
            path: path.to_owned(),
            reason,
        })?;
        let info = PluginInfo {
            name: verified.plugin.clone(),
            version: verified.version.clone(),
            kind: DriverKind::Rs485Meter,
            api_version: supervisor.api_version(),
            origin: PluginOrigin::File {
                path: path.to_owned(),
                key_id: verified.key_id.clone(),
            },
        };
        log::info!(
            target: "concentrator::plugins",
            "loaded plugin `{}` {} ({}, API {}) from {} in a child process (pid {})",
            info.name,
            info.version,
            info.kind,
            info.api_version,
            info.origin,
            supervisor.pid().unwrap_or(0)
        );
        let plugin = Arc::new(Plugin::new(
            info,
            Entries::Child(supervisor),
            self.policy.max_faults,
        ));
        self.plugins.push(Arc::clone(&plugin));
        Ok(plugin)
    }
}
