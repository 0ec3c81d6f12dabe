//! Dynamic broker configuration: the TLS key and trust material of the listeners, changed
//! while the broker runs, as Kafka's
//! `kafka-configs --entity-type brokers --entity-name <id> --alter --add-config
//! listener.name.<l>.ssl.keystore.location=...` does (AlterConfigs or IncrementalAlterConfigs
//! on the BROKER resource).
//!
//! The properties are [`DYNAMIC_SSL_KEYS`], bare or `listener.name.<l>.`-prefixed. A change
//! rebuilds every TLS listener's rustls configuration from the static properties with the
//! dynamic ones over them, re-reading the PEM files (so setting the same location again
//! reloads a file replaced in place); if any listener's configuration fails to build, or a new
//! certificate changes its subject DN or alternative names (Kafka's check, unless
//! `ssl.allow.dn.changes` / `ssl.allow.san.changes`), nothing changes and the request gets
//! INVALID_CONFIG with the reason. Otherwise each listener's
//! [`TlsSlot`] takes its new configuration: connections accepted from then on get the new
//! certificate, established ones keep theirs. The dynamic values are kept in
//! `DATA_DIR/meta/dynamic-broker-configs.json` (durable before the answer) and applied again
//! at start, as Kafka keeps them in its metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;

use super::durable::DurableFile;
use super::{principal, tls, ListenerSpec, SecurityConfig, SecurityProtocol};

/// The properties that can change without a restart (Kafka's reconfigurable SSL settings
/// that shardlog has).
pub const DYNAMIC_SSL_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
];

/// Of those, the ones Kafka types PASSWORD: described as sensitive, without their value.
const SENSITIVE_SSL_KEYS: &[&str] = &[
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.truststore.certificates",
];

/// Whether a (bare or listener-prefixed) dynamic property is sensitive.
pub fn is_sensitive(key: &str) -> bool {
    SENSITIVE_SSL_KEYS
        .iter()
        .any(|s| key == *s || key.ends_with(&format!(".{s}")))
}

/// The rustls configuration new connections of one TLS listener get, with the certificate it
/// presents; replaced on a change.
#[derive(Debug)]
pub struct TlsSlot(RwLock<(Arc<ServerConfig>, CertificateDer<'static>)>);

impl TlsSlot {
    /// A slot holding `config`, which presents `leaf`.
    pub fn new(config: Arc<ServerConfig>, leaf: CertificateDer<'static>) -> TlsSlot {
        TlsSlot(RwLock::new((config, leaf)))
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    fn leaf(&self) -> CertificateDer<'static> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    fn set(&self, config: Arc<ServerConfig>, leaf: CertificateDer<'static>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = (config, leaf);
    }
}

/// Kafka's check on a reloaded keystore: the certificate keeps its subject DN (compared
/// without case) unless `ssl.allow.dn.changes`, and its subject alternative names (as a set)
/// unless `ssl.allow.san.changes`.
fn ensure_compatible(
    effective: &SecurityConfig,
    listener: &str,
    old: &CertificateDer<'_>,
    new: &CertificateDer<'_>,
) -> Result<(), String> {
    let allowed = |key: &str| -> Result<bool, String> {
        match effective.lookup(listener, key).map(str::trim) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(format!("`{key}`: `{v}` is not true or false")),
        }
    };
    if !allowed("ssl.allow.dn.changes")? {
        let (was, now) = (principal::subject_dn(old)?, principal::subject_dn(new)?);
        if !was.eq_ignore_ascii_case(&now) {
            return Err(format!(
                "listener {listener}: Keystore DistinguishedName does not match: existing={{DN={was}}}, \
                 new={{DN={now}}} (set ssl.allow.dn.changes=true to allow it)"
            ));
        }
    }
    if !allowed("ssl.allow.san.changes")?
        && principal::subject_alt_names(old)? != principal::subject_alt_names(new)?
    {
        return Err(format!(
            "listener {listener}: Keystore SubjectAltNames do not match (set \
             ssl.allow.san.changes=true to allow it)"
        ));
    }
    Ok(())
}

/// Why a change was refused.
#[derive(Debug)]
pub enum AlterError {
    /// A property that cannot change dynamically, or a listener that does not exist
    /// (Kafka's INVALID_REQUEST).
    InvalidRequest(String),
    /// The new values do not make a valid TLS configuration (INVALID_CONFIG).
    InvalidConfig(String),
    /// Applied, but not written durably (UNKNOWN_SERVER_ERROR).
    Storage(String),
}

/// A change: incremental (`Some` sets, `None` deletes) or the whole set replaced (legacy
/// AlterConfigs, what `kafka-configs --entity-type brokers` sends).
#[derive(Debug)]
pub enum Change {
    /// IncrementalAlterConfigs SET and DELETE.
    Incremental(Vec<(String, Option<String>)>),
    /// AlterConfigs: these become the broker's dynamic properties.
    Replace(Vec<(String, String)>),
}

#[derive(Default)]
struct Inner {
    overrides: BTreeMap<String, String>,
    generation: u64,
}

struct TlsListener {
    name: String,
    protocol: SecurityProtocol,
    slot: Arc<TlsSlot>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileForm {
    configs: BTreeMap<String, String>,
}

/// The broker's dynamic properties; shared by every shard.
pub struct DynamicBrokerConfig {
    /// The properties as the configuration file and `--set` gave them.
    base: SecurityConfig,
    inner: Mutex<Inner>,
    /// The TLS listeners, once resolved.
    listeners: OnceLock<Vec<TlsListener>>,
    file: DurableFile,
}

impl std::fmt::Debug for DynamicBrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values: inline keys are secrets.
        f.debug_struct("DynamicBrokerConfig")
            .field("file", &self.file.name())
            .finish_non_exhaustive()
    }
}

/// The name under which `key` is kept (listener names lower case, as `SecurityConfig`
/// keeps them), if it is a dynamic property.
fn normalize(key: &str) -> Option<String> {
    if DYNAMIC_SSL_KEYS.contains(&key) {
        return Some(key.to_string());
    }
    let rest = key.strip_prefix("listener.name.")?;
    let (listener, sub) = rest.split_once('.')?;
    (!listener.is_empty() && DYNAMIC_SSL_KEYS.contains(&sub))
        .then(|| format!("listener.name.{}.{sub}", listener.to_ascii_lowercase()))
}

impl DynamicBrokerConfig {
    /// The dynamic properties kept under `data_dir` (none without a data dir), over `base`.
    pub fn open(base: &SecurityConfig, data_dir: Option<&Path>) -> Result<Self, String> {
        let file =
            DurableFile::new(data_dir.map(|d| d.join("meta").join("dynamic-broker-configs.json")));
        let mut inner = Inner::default();
        if let Some(bytes) = file.read()? {
            let form: FileForm =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.name()))?;
            for (k, v) in form.configs {
                let key = normalize(&k)
                    .ok_or_else(|| format!("{}: `{k}` is not a dynamic property", file.name()))?;
                inner.overrides.insert(key, v);
            }
        }
        Ok(DynamicBrokerConfig {
            base: base.clone(),
            inner: Mutex::new(inner),
            listeners: OnceLock::new(),
            file,
        })
    }

    fn with_overrides(&self, overrides: &BTreeMap<String, String>) -> SecurityConfig {
        let mut c = self.base.clone();
        for (k, v) in overrides {
            c.props.insert(k.clone(), v.clone());
        }
        c
    }

    /// The security properties in force: the static ones with the dynamic ones over them.
    pub fn effective(&self) -> SecurityConfig {
        self.with_overrides(&self.lock().overrides)
    }

    /// The dynamic properties set now, by name.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.lock().overrides.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the resolved listeners (once, at start): the TLS ones change with the config.
    pub fn attach(&self, listeners: &[ListenerSpec]) {
        let tls = listeners
            .iter()
            .filter_map(|l| {
                l.tls.as_ref().map(|slot| TlsListener {
                    name: l.name.clone(),
                    protocol: l.protocol,
                    slot: slot.clone(),
                })
            })
            .collect();
        let _ = self.listeners.set(tls);
    }

    /// Applies `change` (only checks it when `validate_only`): every TLS listener's
    /// configuration is rebuilt and swapped in, then the properties are written durably.
    pub async fn alter(&self, change: Change, validate_only: bool) -> Result<(), AlterError> {
        let listeners = self.listeners.get().map(Vec::as_slice).unwrap_or(&[]);
        let check = |key: &str| -> Result<String, AlterError> {
            let normalized = normalize(key).ok_or_else(|| {
                AlterError::InvalidRequest(format!(
                    "Cannot update these configs dynamically: {key} (only {} and their \
                     listener.name.<listener>. forms)",
                    DYNAMIC_SSL_KEYS.join(", ")
                ))
            })?;
            if let Some(rest) = normalized.strip_prefix("listener.name.") {
                let listener = rest.split('.').next().unwrap_or("");
                if !listeners
                    .iter()
                    .any(|l| l.name.eq_ignore_ascii_case(listener))
                {
                    return Err(AlterError::InvalidRequest(format!(
                        "{key}: no TLS listener is named {listener}"
                    )));
                }
            }
            Ok(normalized)
        };
        let (generation, data) = {
            let mut inner = self.lock();
            let mut next = match &change {
                Change::Incremental(_) => inner.overrides.clone(),
                Change::Replace(_) => BTreeMap::new(),
            };
            match change {
                Change::Incremental(ops) => {
                    for (k, v) in ops {
                        let key = check(&k)?;
                        match v {
                            Some(v) => next.insert(key, v),
                            None => next.remove(&key),
                        };
                    }
                }
                Change::Replace(all) => {
                    for (k, v) in all {
                        next.insert(check(&k)?, v);
                    }
                }
            }
            let effective = self.with_overrides(&next);
            let built = listeners
                .iter()
                .map(|l| {
                    let (config, leaf) =
                        tls::server_config_and_leaf(&effective, &l.name, l.protocol)?;
                    ensure_compatible(&effective, &l.name, &l.slot.leaf(), &leaf)?;
                    Ok((config, leaf))
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(AlterError::InvalidConfig)?;
            if validate_only {
                return Ok(());
            }
            for (l, (config, leaf)) in listeners.iter().zip(built) {
                l.slot.set(config, leaf);
                tracing::info!(listener = %l.name, "TLS configuration reloaded");
            }
            inner.overrides = next;
            inner.generation += 1;
            let data = serde_json::to_vec_pretty(&FileForm {
                configs: inner.overrides.clone(),
            })
            .map_err(|e| AlterError::Storage(e.to_string()))?;
            (inner.generation, data)
        };
        self.file
            .save(generation, data)
            .await
            .map_err(|e| AlterError::Storage(format!("{}: {e}", self.file.name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_keys_bare_or_per_listener() {
        assert_eq!(
            normalize("listener.name.SSL.ssl.keystore.location").as_deref(),
            Some("listener.name.ssl.ssl.keystore.location")
        );
        assert_eq!(
            normalize("ssl.truststore.certificates").as_deref(),
            Some("ssl.truststore.certificates")
        );
        assert_eq!(normalize("ssl.client.auth"), None);
        assert_eq!(normalize("listener.name.ssl.sasl.enabled.mechanisms"), None);
        assert!(is_sensitive("listener.name.ssl.ssl.keystore.key"));
        assert!(!is_sensitive("ssl.keystore.location"));
    }
}
