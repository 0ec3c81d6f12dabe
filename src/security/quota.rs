//! Client quotas with Kafka's semantics (`ClientQuotaManager` and its default callback):
//! `producer_byte_rate`, `consumer_byte_rate` and `request_percentage` set on users, client
//! ids or both (each a name or `<default>`), kept durably in `DATA_DIR/meta/client-quotas.json`
//! and shared by every shard.
//!
//! Which quota applies to a request is Kafka's precedence, for each quota type on its own:
//! user + client id, user + default client id, user, default user + client id, default user +
//! default client id, default user, client id, default client id. The quota is shared by every
//! connection the matching entity covers (a user quota by all of that user's clients), across
//! every shard of the broker: the usage of each such group is one sampled rate behind a lock
//! that only requests of clients with a quota take. A per-shard split (each shard enforcing
//! 1/shards of the quota, as Redpanda does) was not chosen: a client whose connections land
//! on one shard would get a fraction of its quota, which Kafka's contract does not allow.
//!
//! The rate is Kafka's sampled rate: `quota.window.num` samples (default 11) of
//! `quota.window.size.seconds` each (default 1), measured over the time the samples span and
//! at least `quota.window.num - 1` windows. A request that takes the rate over its quota is
//! throttled for `(rate - quota) / quota * window`, Kafka's throttle time, capped at the
//! whole window. As in Kafka the rate allows bursts of up to the whole window's worth; fewer
//! samples make it smoother.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use super::durable::DurableFile;

/// Usage groups kept before idle ones (no sample within the window) are dropped, as Kafka
/// expires idle quota sensors (and, should all be active, all start over): bounds the
/// memory of clients that come and go.
pub const USAGE_GROUPS_MAX: usize = 4096;

/// Samples in a quota's rate by default (Kafka's `quota.window.num`).
pub const QUOTA_WINDOW_NUM_DEFAULT: usize = 11;
/// Span of one sample by default (Kafka's `quota.window.size.seconds`).
pub const QUOTA_WINDOW_SIZE_SECONDS_DEFAULT: u64 = 1;

/// How usage is sampled: `num` samples of `size_ms` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaWindow {
    /// Samples (`quota.window.num`, at least 1).
    pub num: usize,
    /// Span of one sample in ms (`quota.window.size.seconds` × 1000, at least 1 s).
    pub size_ms: u64,
}

impl Default for QuotaWindow {
    fn default() -> Self {
        QuotaWindow {
            num: QUOTA_WINDOW_NUM_DEFAULT,
            size_ms: QUOTA_WINDOW_SIZE_SECONDS_DEFAULT * 1000,
        }
    }
}

impl QuotaWindow {
    /// The longest throttle of one request: the whole window.
    pub fn throttle_max_ms(self) -> u64 {
        self.num as u64 * self.size_ms
    }
}

/// The quota types, by Kafka's config keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaType {
    /// `producer_byte_rate`: bytes of Produce requests per second.
    Produce,
    /// `consumer_byte_rate`: bytes of Fetch responses per second.
    Fetch,
    /// `request_percentage`: percent of one shard's time spent on the client's requests.
    Request,
}

impl QuotaType {
    /// Kafka's config key.
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => "producer_byte_rate",
            QuotaType::Fetch => "consumer_byte_rate",
            QuotaType::Request => "request_percentage",
        }
    }

    /// By Kafka's config key.
    pub fn from_key(key: &str) -> Option<QuotaType> {
        [QuotaType::Produce, QuotaType::Fetch, QuotaType::Request]
            .into_iter()
            .find(|t| t.key() == key)
    }
}

/// One part of a quota entity: a name, or the default (`<default>`, null on the wire).
pub type EntityName = Option<String>;

/// A quota entity: a user, a client id, or both; each `None` when the entity lacks that type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct QuotaEntity {
    /// `user`: `Some(None)` is the default user.
    pub user: Option<EntityName>,
    /// `client-id`: `Some(None)` is the default client id.
    pub client_id: Option<EntityName>,
}

/// Kafka's entity type names.
pub const ENTITY_USER: &str = "user";
/// Kafka's entity type names.
pub const ENTITY_CLIENT_ID: &str = "client-id";

#[derive(Clone, Debug)]
struct Entry {
    entity: QuotaEntity,
    values: Vec<(String, f64)>,
}

/// An entity part as written in the file (a default is not a missing part).
#[derive(serde::Serialize, serde::Deserialize)]
enum StoredPart {
    Named(String),
    Default,
}

/// An entry as written in the file.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEntry {
    user: Option<StoredPart>,
    client_id: Option<StoredPart>,
    values: Vec<(String, f64)>,
}

impl StoredPart {
    fn of(part: &Option<EntityName>) -> Option<StoredPart> {
        part.as_ref().map(|n| match n {
            Some(name) => StoredPart::Named(name.clone()),
            None => StoredPart::Default,
        })
    }

    fn back(part: Option<StoredPart>) -> Option<EntityName> {
        part.map(|p| match p {
            StoredPart::Named(name) => Some(name),
            StoredPart::Default => None,
        })
    }
}

/// One change of AlterClientQuotas: set (`Some`) or remove (`None`) a key.
pub type QuotaOp = (String, Option<f64>);

/// Checks a change as Kafka does: a known key with a positive value (byte rates whole).
pub fn check_op(key: &str, value: Option<f64>) -> Result<(), String> {
    let Some(t) = QuotaType::from_key(key) else {
        return Err(format!(
            "quota `{key}` is not supported (producer_byte_rate, consumer_byte_rate, request_percentage)"
        ));
    };
    match value {
        None => Ok(()),
        Some(v) if !v.is_finite() || v <= 0.0 => {
            Err(format!("quota `{key}` must be positive, got {v}"))
        }
        Some(v) if t != QuotaType::Request && v.fract() != 0.0 => Err(format!(
            "quota `{key}` must be a whole number of bytes, got {v}"
        )),
        Some(_) => Ok(()),
    }
}

/// Kafka's sampled rate.
#[derive(Debug, Default)]
struct Rate {
    /// (start ms, value) of up to `QUOTA_WINDOW_NUM` samples.
    samples: Vec<(u64, f64)>,
    current: usize,
}

impl Rate {
    fn record(&mut self, w: QuotaWindow, value: f64, now_ms: u64) {
        let roll = match self.samples.get(self.current) {
            None => true,
            Some((start, _)) => now_ms >= start + w.size_ms,
        };
        if roll {
            if self.samples.len() < w.num {
                self.samples.push((now_ms, 0.0));
                self.current = self.samples.len() - 1;
            } else {
                self.current = (self.current + 1) % w.num;
                self.samples[self.current] = (now_ms, 0.0);
            }
        }
        self.samples[self.current].1 += value;
    }

    /// (rate per second, the window it is measured over in ms).
    fn measure(&mut self, w: QuotaWindow, now_ms: u64) -> (f64, u64) {
        let expire = w.throttle_max_ms();
        for s in &mut self.samples {
            if now_ms.saturating_sub(s.0) >= expire {
                *s = (now_ms, 0.0);
            }
        }
        let total: f64 = self.samples.iter().map(|s| s.1).sum();
        let oldest = self.samples.iter().map(|s| s.0).min().unwrap_or(now_ms);
        let mut elapsed = now_ms.saturating_sub(oldest);
        let full = elapsed / w.size_ms;
        let min_full = w.num as u64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * w.size_ms;
        }
        let elapsed = elapsed.max(1);
        (total * 1000.0 / elapsed as f64, elapsed)
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    generation: u64,
}

/// The quota file's path under a data dir.
pub fn file_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("meta").join("client-quotas.json")
}

/// The client quotas of the broker and their usage.
pub struct QuotaStore {
    window: QuotaWindow,
    inner: RwLock<Inner>,
    /// Some quota is set: requests are measured.
    any: AtomicBool,
    /// Usage per (type, user tag, client tag).
    usage: Mutex<HashMap<(QuotaType, String, String), Rate>>,
    file: DurableFile,
}

impl std::fmt::Debug for QuotaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaStore").finish_non_exhaustive()
    }
}

impl QuotaStore {
    /// The quotas of `data_dir` (none: memory only), sampled by `window`.
    pub fn open(
        data_dir: Option<&std::path::Path>,
        window: QuotaWindow,
    ) -> Result<QuotaStore, String> {
        let file = DurableFile::new(data_dir.map(file_path));
        let stored: Vec<StoredEntry> = match file.read()? {
            None => Vec::new(),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.name()))?
            }
        };
        let entries: Vec<Entry> = stored
            .into_iter()
            .map(|e| Entry {
                entity: QuotaEntity {
                    user: StoredPart::back(e.user),
                    client_id: StoredPart::back(e.client_id),
                },
                values: e.values,
            })
            .collect();
        Ok(QuotaStore {
            window,
            any: AtomicBool::new(!entries.is_empty()),
            inner: RwLock::new(Inner {
                entries,
                generation: 0,
            }),
            usage: Mutex::new(HashMap::new()),
            file,
        })
    }

    /// No quota is set: nothing to measure.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Relaxed)
    }

    /// Applies the changes of one entity (checked with [`check_op`] first); an entity left
    /// without values is removed. Then [`QuotaStore::save`].
    pub fn alter(&self, entity: &QuotaEntity, ops: &[QuotaOp]) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let at = match inner.entries.iter().position(|e| e.entity == *entity) {
            Some(i) => i,
            None => {
                inner.entries.push(Entry {
                    entity: entity.clone(),
                    values: Vec::new(),
                });
                inner.entries.len() - 1
            }
        };
        let values = &mut inner.entries[at].values;
        for (key, value) in ops {
            values.retain(|(k, _)| k != key);
            if let Some(v) = value {
                values.push((key.clone(), *v));
            }
        }
        values.sort_by(|a, b| a.0.cmp(&b.0));
        inner.entries.retain(|e| !e.values.is_empty());
        inner.generation += 1;
        self.any.store(!inner.entries.is_empty(), Ordering::Relaxed);
    }

    /// Every entity with its values, for DescribeClientQuotas (the handler filters).
    pub fn entries(&self) -> Vec<(QuotaEntity, Vec<(String, f64)>)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .iter()
            .map(|e| (e.entity.clone(), e.values.clone()))
            .collect()
    }

    /// The quota of type `t` for `user` and `client_id` by Kafka's precedence, with the
    /// usage group it is shared by: (quota, user tag, client tag).
    fn quota_for(
        &self,
        t: QuotaType,
        user: &str,
        client_id: &str,
    ) -> Option<(f64, String, String)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let named = |n: &str| Some(Some(n.to_string()));
        let order: [(Option<EntityName>, Option<EntityName>); 8] = [
            (named(user), named(client_id)),
            (named(user), Some(None)),
            (named(user), None),
            (Some(None), named(client_id)),
            (Some(None), Some(None)),
            (Some(None), None),
            (None, named(client_id)),
            (None, Some(None)),
        ];
        for (u, c) in order {
            let found = inner
                .entries
                .iter()
                .find(|e| e.entity.user == u && e.entity.client_id == c);
            if let Some(v) = found.and_then(|e| e.values.iter().find(|(k, _)| k == t.key())) {
                let user_tag = if u.is_some() { user } else { "" };
                let client_tag = if c.is_some() { client_id } else { "" };
                return Some((v.1, user_tag.to_string(), client_tag.to_string()));
            }
        }
        None
    }

    /// What `user` and `client_id` may take of type `t` in one window (Kafka's
    /// `getMaxValueInQuotaWindow`: the quota times `quota.window.num - 1` windows); `None`
    /// without a quota. A Fetch asks for no more than this, so one response cannot overdraw
    /// the quota by more than a window.
    pub fn window_allowance(&self, t: QuotaType, user: &str, client_id: &str) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        let (quota, _, _) = self.quota_for(t, user, client_id)?;
        let windows = (self.window.num.saturating_sub(1)).max(1) as f64;
        Some(quota * windows * self.window.size_ms as f64 / 1000.0)
    }

    /// Records `value` (bytes, or percent-seconds of shard time for `Request`) for `user`
    /// and `client_id` and returns how long the client is throttled for it, in ms (0: within
    /// its quota or without one).
    pub fn record(&self, t: QuotaType, user: &str, client_id: &str, value: f64) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let Some((quota, user_tag, client_tag)) = self.quota_for(t, user, client_id) else {
            return 0;
        };
        let now_ms = now_ms();
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if usage.len() >= USAGE_GROUPS_MAX {
            let expire = self.window.throttle_max_ms();
            usage.retain(|_, r| {
                r.samples
                    .iter()
                    .any(|(start, _)| now_ms.saturating_sub(*start) < expire)
            });
            if usage.len() >= USAGE_GROUPS_MAX {
                // All active: each group starts over, as a new client id would.
                usage.clear();
            }
        }
        let rate = usage.entry((t, user_tag, client_tag)).or_default();
        rate.record(self.window, value, now_ms);
        let (observed, window_ms) = rate.measure(self.window, now_ms);
        throttle_time_ms(observed, quota, window_ms).min(self.window.throttle_max_ms())
    }

    /// Writes the quotas durably.
    pub async fn save(&self) -> std::io::Result<()> {
        let (generation, data) = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            (
                inner.generation,
                serde_json::to_vec_pretty(
                    &inner
                        .entries
                        .iter()
                        .map(|e| StoredEntry {
                            user: StoredPart::of(&e.entity.user),
                            client_id: StoredPart::of(&e.entity.client_id),
                            values: e.values.clone(),
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
            )
        };
        self.file.save(generation, data).await
    }
}

/// Kafka's throttle time: how long the client must stay silent for its rate over `window_ms`
/// to come back to `quota`; 0 within the quota.
pub fn throttle_time_ms(observed: f64, quota: f64, window_ms: u64) -> u64 {
    if observed <= quota || quota <= 0.0 {
        return 0;
    }
    let t = (observed - quota) / quota * window_ms as f64;
    t.round() as u64
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<EntityName>, client_id: Option<EntityName>) -> QuotaEntity {
        QuotaEntity { user, client_id }
    }

    #[test]
    fn kafkas_precedence_and_groups() {
        let q = QuotaStore::open(None, QuotaWindow::default()).expect("store");
        assert!(q.is_empty());
        assert_eq!(q.record(QuotaType::Produce, "alice", "app", 1e9), 0);
        q.alter(
            &entity(None, Some(None)),
            &[("producer_byte_rate".into(), Some(10.0))],
        );
        assert_eq!(
            q.quota_for(QuotaType::Produce, "alice", "app"),
            Some((10.0, String::new(), "app".into())),
            "default client id: per client id"
        );
        assert_eq!(q.quota_for(QuotaType::Fetch, "alice", "app"), None);
        q.alter(
            &entity(Some(Some("alice".into())), None),
            &[("producer_byte_rate".into(), Some(20.0))],
        );
        assert_eq!(
            q.quota_for(QuotaType::Produce, "alice", "app"),
            Some((20.0, "alice".into(), String::new())),
            "a user quota wins over a client one, shared by the user's clients"
        );
        q.alter(
            &entity(Some(Some("alice".into())), Some(Some("app".into()))),
            &[("producer_byte_rate".into(), Some(30.0))],
        );
        assert_eq!(
            q.quota_for(QuotaType::Produce, "alice", "app").map(|x| x.0),
            Some(30.0)
        );
        assert_eq!(
            q.quota_for(QuotaType::Produce, "alice", "other")
                .map(|x| x.0),
            Some(20.0)
        );
        assert_eq!(
            q.quota_for(QuotaType::Produce, "bob", "other").map(|x| x.0),
            Some(10.0)
        );
        q.alter(
            &entity(Some(Some("alice".into())), Some(Some("app".into()))),
            &[("producer_byte_rate".into(), None)],
        );
        assert_eq!(q.entries().len(), 2, "an entity without values is gone");
        // Usage of clients that come and go stays bounded.
        for i in 0..USAGE_GROUPS_MAX + 10 {
            q.record(QuotaType::Produce, "bob", &format!("c{i}"), 1.0);
        }
        let groups = q.usage.lock().expect("usage").len();
        assert!(groups <= USAGE_GROUPS_MAX, "{groups}");
    }

    #[test]
    fn a_default_survives_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = QuotaStore::open(Some(dir.path()), QuotaWindow::default()).expect("store");
        let default_user = entity(Some(None), None);
        q.alter(&default_user, &[("consumer_byte_rate".into(), Some(4.0))]);
        let named = entity(None, Some(Some("app".into())));
        q.alter(&named, &[("producer_byte_rate".into(), Some(8.0))]);
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { q.save().await })
            .expect("executor")
            .join()
            .expect("join")
            .expect("save");
        let again = QuotaStore::open(Some(dir.path()), QuotaWindow::default()).expect("reopen");
        let entries = again.entries();
        assert!(entries.contains(&(default_user, vec![("consumer_byte_rate".into(), 4.0)])));
        assert!(entries.contains(&(named, vec![("producer_byte_rate".into(), 8.0)])));
    }

    #[test]
    fn throttle_is_kafkas() {
        assert_eq!(throttle_time_ms(100.0, 100.0, 10_000), 0);
        assert_eq!(throttle_time_ms(150.0, 100.0, 10_000), 5_000);
        // The first sample counts over the minimum window (10 s): 10 s of quota at once
        // is allowed, more is throttled.
        let w = QuotaWindow::default();
        let mut r = Rate::default();
        r.record(w, 1000.0, 5_000);
        let (rate, window) = r.measure(w, 5_000);
        assert_eq!(window, 10_000);
        assert!((rate - 100.0).abs() < 1e-9);
        // Samples older than the whole window no longer count.
        let (rate, _) = r.measure(w, 5_000 + w.throttle_max_ms());
        assert_eq!(rate, 0.0);
        // Two samples: the rate is over the last one to two windows.
        let two = QuotaWindow {
            num: 2,
            size_ms: 1000,
        };
        let mut r = Rate::default();
        r.record(two, 100.0, 0);
        r.record(two, 100.0, 1500);
        assert_eq!(r.measure(two, 1500), (200.0 / 1.5, 1500));
        assert!(check_op("producer_byte_rate", Some(1.5)).is_err());
        assert!(check_op("request_percentage", Some(1.5)).is_ok());
        assert!(check_op("consumer_byte_rate", Some(0.0)).is_err());
        assert!(check_op("connection_creation_rate", Some(1.0)).is_err());
        assert!(check_op("producer_byte_rate", None).is_ok());
    }
}
