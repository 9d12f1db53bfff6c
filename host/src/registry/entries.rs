//! What is deployed, as stored: [`FunctionEntry`] (also each kept version), the limits a deploy
//! sets, the name rule, and reading entries and versions straight from the backend.

use serde::{Deserialize, Serialize};

use super::Registry;
use crate::backend::{BackendError, FunctionRecord};
use crate::worlds::World;

/// A deployed function, as stored in the backend and returned by the admin API; also one kept
/// version of it (a version list holds whole entries, so a rollback restores every setting the
/// version was deployed with).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FunctionEntry {
    pub name: String,
    pub app: String,
    /// This deploy's number among the name's deploys: 1, 2, 3… (0 in entries written before
    /// versions existed). A rollback makes an older number current again.
    #[serde(default)]
    #[schema(required = true)]
    pub version: u64,
    /// Lowercase hex SHA-256 of the component bytes.
    pub digest: String,
    /// Component size in bytes.
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
    /// The component's world (absent in entries written before worlds existed: `goldfish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "goldfish")]
    pub world: Option<World>,
    /// Linear memory limit set at deploy (`?memory_mib=`); `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// CPU budget per call set at deploy (`?cpu_ms=`), in milliseconds; `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u32>,
    /// kv operations per call set at deploy (`?kv_ops=`); `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_ops: Option<u64>,
    /// kv bytes per call set at deploy (`?kv_bytes=`); `None` means the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes: Option<u64>,
    /// Who deployed it: the label of the admin token used (absent before versions existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Limits a function sets for itself at deploy, each capped by the host's.
#[derive(Clone, Copy, Debug, Default)]
pub struct FunctionLimits {
    pub memory_mib: Option<u32>,
    pub cpu_ms: Option<u32>,
    pub kv_ops: Option<u64>,
    pub kv_bytes: Option<u64>,
}

/// Why a version list or a rollback failed.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("no function named `{0}` is deployed")]
    NotFound(String),
    #[error("function `{name}` has no version {version}; kept versions: {kept}")]
    UnknownVersion {
        name: String,
        version: u64,
        kept: String,
    },
    #[error(
        "function `{name}` is at its oldest kept version ({current}): there is nothing older to roll back to"
    )]
    NoPrevious { name: String, current: u64 },
    /// Others kept changing the function during every attempt.
    #[error("function `{0}` kept changing during the rollback; retry")]
    Contended(String),
    #[error("the registry entry of `{name}` is unreadable: {reason}")]
    Unreadable { name: String, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Registry {
    /// `name`'s current entry and kept versions (newest first).
    pub async fn versions(
        &self,
        name: &str,
    ) -> Result<(FunctionEntry, Vec<FunctionEntry>), VersionError> {
        let record = self.backend.get_record(name).await?;
        match read_versions(name, &record)? {
            (Some(current), history) => Ok((current, history)),
            (None, _) => Err(VersionError::NotFound(name.to_owned())),
        }
    }

    /// Every deployed function, straight from the backend.
    pub async fn list(&self) -> Result<Vec<FunctionEntry>, BackendError> {
        let (_, entries) = self.backend.list_functions().await?;
        Ok(entries
            .iter()
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect())
    }

    /// One function's entry, straight from the backend.
    pub async fn get(&self, name: &str) -> Result<Option<FunctionEntry>, BackendError> {
        let json = self.backend.get_function(name).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }
}

/// A function's current entry and its kept versions, newest first, from its stored record. An
/// entry written before versions existed counts as version 1, its only version.
pub(super) fn read_versions(
    name: &str,
    record: &FunctionRecord,
) -> Result<(Option<FunctionEntry>, Vec<FunctionEntry>), VersionError> {
    let unreadable = |e: serde_json::Error| VersionError::Unreadable {
        name: name.to_owned(),
        reason: e.to_string(),
    };
    let current: Option<FunctionEntry> = match &record.entry {
        Some(json) => {
            let mut entry: FunctionEntry = serde_json::from_str(json).map_err(unreadable)?;
            entry.version = entry.version.max(1);
            Some(entry)
        }
        None => None,
    };
    let mut history: Vec<FunctionEntry> = match (&record.history, &current) {
        (Some(json), _) => serde_json::from_str(json).map_err(unreadable)?,
        (None, Some(current)) => vec![current.clone()],
        (None, None) => Vec::new(),
    };
    history.sort_by_key(|v| std::cmp::Reverse(v.version));
    Ok((current, history))
}

/// Whether `s` is a valid function or app name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_valid_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(entry: Option<&str>, history: Option<&str>) -> FunctionRecord {
        FunctionRecord {
            entry: entry.map(str::to_owned),
            history: history.map(str::to_owned),
        }
    }

    #[test]
    fn an_entry_from_before_versions_is_version_one_and_its_own_history() {
        let legacy = r#"{"name":"f","app":"f","digest":"d","size":1,"deployed_at":2}"#;
        let (current, history) = read_versions("f", &record(Some(legacy), None)).ok().unzip();
        assert_eq!(current.flatten().map(|c| c.version), Some(1));
        let history = history.unwrap_or_default();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].digest, "d");
    }

    #[test]
    fn history_reads_newest_first_and_garbage_is_unreadable() {
        let entry = |v: u64| {
            format!(
                r#"{{"name":"f","app":"f","digest":"d{v}","size":1,"deployed_at":2,"version":{v}}}"#
            )
        };
        let history = format!("[{},{},{}]", entry(1), entry(3), entry(2));
        let versions = read_versions("f", &record(Some(&entry(2)), Some(&history)));
        let numbers: Vec<u64> = versions
            .map(|(_, h)| h.iter().map(|v| v.version).collect())
            .unwrap_or_default();
        assert_eq!(numbers, [3, 2, 1]);
        assert!(matches!(
            read_versions("f", &record(Some("{"), None)),
            Err(VersionError::Unreadable { .. })
        ));
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        assert!(is_valid_name("cart"));
        assert!(is_valid_name("0-pizza-2"));
        assert!(is_valid_name(&"a".repeat(63)));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-cart"));
        assert!(!is_valid_name("Cart"));
        assert!(!is_valid_name("cart_2"));
        assert!(!is_valid_name("a/b"));
    }
}
