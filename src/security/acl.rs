//! ACLs and the authorizer, with Kafka's semantics (StandardAuthorizer): bindings of a
//! resource pattern (type, name, LITERAL or PREFIXED) to a principal, host, operation and
//! ALLOW/DENY, kept durably in `DATA_DIR/meta/acls.json` and shared by every shard.
//!
//! A request is allowed when the principal is a super user (`super.users`); else when no DENY
//! binding matches and an ALLOW binding does (ALL covers every operation; READ, WRITE, DELETE
//! and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS); else, when no binding at
//! all names the resource, by `allow.everyone.if.no.acl.found` (default false). A binding
//! matches principal `User:*` and host `*` as wildcards, and resource name `*` (LITERAL) as
//! every resource of its type. Without `authorizer.class.name` everything is allowed.

use std::sync::RwLock;

use super::durable::DurableFile;

/// Kafka's resource types (wire values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster (resource name `kafka-cluster`).
    Cluster,
    /// A transactional id.
    TransactionalId,
    /// A delegation token.
    DelegationToken,
    /// A user.
    User,
}

impl ResourceType {
    /// By wire value (2..=7); `None` for ANY (1), UNKNOWN (0) or another value.
    pub fn from_code(c: i8) -> Option<ResourceType> {
        Some(match c {
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            6 => ResourceType::DelegationToken,
            7 => ResourceType::User,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }
}

/// The name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// Kafka's operations (wire values 2..=14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl AclOperation {
    const ALL_OPS: [AclOperation; 13] = [
        AclOperation::All,
        AclOperation::Read,
        AclOperation::Write,
        AclOperation::Create,
        AclOperation::Delete,
        AclOperation::Alter,
        AclOperation::Describe,
        AclOperation::ClusterAction,
        AclOperation::DescribeConfigs,
        AclOperation::AlterConfigs,
        AclOperation::IdempotentWrite,
        AclOperation::CreateTokens,
        AclOperation::DescribeTokens,
    ];

    /// By wire value; `None` for ANY (1), UNKNOWN (0) or another value.
    pub fn from_code(c: i8) -> Option<AclOperation> {
        Self::ALL_OPS.get((c as usize).wrapping_sub(2)).copied()
    }

    /// The wire value.
    pub fn code(self) -> i8 {
        Self::ALL_OPS.iter().position(|o| *o == self).unwrap_or(0) as i8 + 2
    }

    /// Kafka's name (as in `kafka-acls` output and the authorizer log).
    pub fn name(self) -> &'static str {
        match self {
            AclOperation::All => "ALL",
            AclOperation::Read => "READ",
            AclOperation::Write => "WRITE",
            AclOperation::Create => "CREATE",
            AclOperation::Delete => "DELETE",
            AclOperation::Alter => "ALTER",
            AclOperation::Describe => "DESCRIBE",
            AclOperation::ClusterAction => "CLUSTER_ACTION",
            AclOperation::DescribeConfigs => "DESCRIBE_CONFIGS",
            AclOperation::AlterConfigs => "ALTER_CONFIGS",
            AclOperation::IdempotentWrite => "IDEMPOTENT_WRITE",
            AclOperation::CreateTokens => "CREATE_TOKENS",
            AclOperation::DescribeTokens => "DESCRIBE_TOKENS",
        }
    }

    /// A binding for `self` allows `requested` (ALL covers all; the implied DESCRIBEs).
    fn covers(self, requested: AclOperation) -> bool {
        use AclOperation::*;
        self == All
            || self == requested
            || (requested == Describe && matches!(self, Read | Write | Delete | Alter))
            || (requested == DescribeConfigs && self == AlterConfigs)
    }
}

/// LITERAL (3) or PREFIXED (4) resource names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PatternType {
    /// The name as written (`*`: every resource of the type).
    Literal,
    /// Every resource whose name starts with it.
    Prefixed,
}

impl PatternType {
    /// By wire value.
    pub fn from_code(c: i8) -> Option<PatternType> {
        match c {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }

    /// The wire value.
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }
}

/// One ACL: a resource pattern and an access entry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AclBinding {
    /// The resource type.
    pub resource_type: ResourceType,
    /// The resource name or prefix.
    pub resource_name: String,
    /// How the name matches.
    pub pattern_type: PatternType,
    /// `User:<name>` or `User:*`.
    pub principal: String,
    /// A client address or `*`.
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// ALLOW (true) or DENY (false).
    pub allow: bool,
}

impl AclBinding {
    fn matches_resource(&self, rt: ResourceType, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == name || self.resource_name == "*",
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }
}

/// A filter of DescribeAcls/DeleteAcls: each `None` matches anything. Pattern MATCH (2)
/// selects the bindings that would apply to the named resource.
#[derive(Clone, Debug, Default)]
pub struct AclFilter {
    /// Resource type; `None`: ANY.
    pub resource_type: Option<ResourceType>,
    /// Resource name; `None`: any.
    pub resource_name: Option<String>,
    /// `None`: ANY; `Some(None)`: MATCH; `Some(Some(p))`: exactly `p`.
    pub pattern: Option<Option<PatternType>>,
    /// Principal; `None`: any.
    pub principal: Option<String>,
    /// Host; `None`: any.
    pub host: Option<String>,
    /// Operation; `None`: ANY.
    pub operation: Option<AclOperation>,
    /// Permission; `None`: ANY.
    pub allow: Option<bool>,
}

impl AclFilter {
    /// This filter selects `b`.
    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != b.resource_type)
            || self.principal.as_ref().is_some_and(|p| *p != b.principal)
            || self.host.as_ref().is_some_and(|h| *h != b.host)
            || self.operation.is_some_and(|o| o != b.operation)
            || self.allow.is_some_and(|a| a != b.allow)
        {
            return false;
        }
        match (&self.pattern, &self.resource_name) {
            (None, None) => true,
            (None, Some(n)) => b.resource_name == *n,
            (Some(Some(p)), name) => {
                *p == b.pattern_type && name.as_ref().is_none_or(|n| b.resource_name == *n)
            }
            (Some(None), None) => true,
            (Some(None), Some(n)) => b.matches_resource(b.resource_type, n),
        }
    }
}

#[derive(Default)]
struct Inner {
    acls: Vec<AclBinding>,
    generation: u64,
}

/// The authorizer: the ACLs and the settings that decide without them.
pub struct Authorizer {
    /// `authorizer.class.name` is set: requests are checked.
    pub enabled: bool,
    /// `super.users`: principals allowed everything.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_if_no_acl: bool,
    inner: RwLock<Inner>,
    file: DurableFile,
}

/// The authorizer classes accepted for `authorizer.class.name` (both mean shardlog's own).
pub const AUTHORIZER_CLASSES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// The ACL file's path under a data dir.
pub fn file_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("meta").join("acls.json")
}

impl Authorizer {
    /// An authorizer from the settings, with the ACLs of `data_dir` (none: memory only).
    pub fn open(
        class: Option<&str>,
        super_users: Option<&str>,
        allow_if_no_acl: bool,
        data_dir: Option<&std::path::Path>,
    ) -> Result<Authorizer, String> {
        let enabled = match class.map(str::trim) {
            None | Some("") => false,
            Some(c) if AUTHORIZER_CLASSES.contains(&c) => true,
            Some(c) => {
                return Err(format!(
                    "`authorizer.class.name`: {c} is not supported (use {})",
                    AUTHORIZER_CLASSES[0]
                ))
            }
        };
        let super_users = super_users
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.contains(':') {
                    Ok(s.to_string())
                } else {
                    Err(format!(
                        "`super.users`: `{s}` is not TYPE:NAME (User:alice)"
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let file = DurableFile::new(data_dir.map(file_path));
        let acls = match file.read()? {
            None => Vec::new(),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.name()))?
            }
        };
        Ok(Authorizer {
            enabled,
            super_users,
            allow_if_no_acl,
            inner: RwLock::new(Inner {
                acls,
                generation: 0,
            }),
            file,
        })
    }

    /// May `principal` from `host` perform `op` on the resource?
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        op: AclOperation,
        rt: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut found = false;
        let mut allowed = false;
        for b in inner.acls.iter().filter(|b| b.matches_resource(rt, name)) {
            found = true;
            let applies = (b.principal == principal || b.principal == "User:*")
                && (b.host == host || b.host == "*");
            if !applies {
                continue;
            }
            if !b.allow && (b.operation == AclOperation::All || b.operation == op) {
                return false;
            }
            if b.allow && b.operation.covers(op) {
                allowed = true;
            }
        }
        allowed || (!found && self.allow_if_no_acl)
    }

    /// May `principal` from `host` perform `op` on at least one resource of type `rt`? Kafka's
    /// `authorizeByResourceType` (KIP-679: an idempotent producer needs WRITE on some topic or
    /// IDEMPOTENT_WRITE on the cluster): an ALLOW binding that no DENY binding covers whole
    /// (a DENY on `*`, on the same literal name, or on a prefix of the allowed name or prefix);
    /// with no binding of the type at all, `allow.everyone.if.no.acl.found` decides.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        op: AclOperation,
        rt: ResourceType,
    ) -> bool {
        if !self.enabled || self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let of_type: Vec<&AclBinding> = inner
            .acls
            .iter()
            .filter(|b| b.resource_type == rt)
            .collect();
        let applies = |b: &AclBinding| {
            (b.principal == principal || b.principal == "User:*")
                && (b.host == host || b.host == "*")
        };
        let denies: Vec<&AclBinding> = of_type
            .iter()
            .copied()
            .filter(|b| {
                !b.allow && applies(b) && (b.operation == AclOperation::All || b.operation == op)
            })
            .collect();
        let denied = |name: &str, prefixed: bool| {
            denies.iter().any(|d| match d.pattern_type {
                PatternType::Literal => {
                    d.resource_name == "*" || (!prefixed && d.resource_name == name)
                }
                PatternType::Prefixed => name.starts_with(&d.resource_name),
            })
        };
        let allowed = of_type.iter().any(|b| {
            b.allow
                && applies(b)
                && b.operation.covers(op)
                && !denied(&b.resource_name, b.pattern_type == PatternType::Prefixed)
        });
        allowed || (of_type.is_empty() && self.allow_if_no_acl)
    }

    /// Adds bindings (an existing identical one is kept once); then [`Authorizer::save`].
    pub fn add(&self, bindings: Vec<AclBinding>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for b in bindings {
            if !inner.acls.contains(&b) {
                inner.acls.push(b);
            }
        }
        inner.generation += 1;
    }

    /// The bindings `filter` selects.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .acls
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// Removes the bindings `filter` selects and returns them.
    pub fn remove(&self, filter: &AclFilter) -> Vec<AclBinding> {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let (gone, kept): (Vec<_>, Vec<_>) = inner.acls.drain(..).partition(|b| filter.matches(b));
        inner.acls = kept;
        if !gone.is_empty() {
            inner.generation += 1;
        }
        gone
    }

    /// Writes the ACLs durably.
    pub async fn save(&self) -> std::io::Result<()> {
        let (generation, data) = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            (
                inner.generation,
                serde_json::to_vec_pretty(&inner.acls).unwrap_or_default(),
            )
        };
        self.file.save(generation, data).await
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: AclOperation,
        allow: bool,
    ) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            allow,
        }
    }

    fn authorizer(allow_if_no_acl: bool) -> Authorizer {
        Authorizer::open(
            Some(AUTHORIZER_CLASSES[0]),
            Some("User:admin"),
            allow_if_no_acl,
            None,
        )
        .expect("authorizer")
    }

    #[test]
    fn kafka_rules() {
        let a = authorizer(false);
        let (read, desc, write) = (
            AclOperation::Read,
            AclOperation::Describe,
            AclOperation::Write,
        );
        let t = ResourceType::Topic;
        assert!(!a.authorize("User:alice", "1.2.3.4", read, t, "a"));
        assert!(
            a.authorize("User:admin", "1.2.3.4", read, t, "a"),
            "super user"
        );
        a.add(vec![binding(
            "a",
            PatternType::Literal,
            "User:alice",
            read,
            true,
        )]);
        assert!(a.authorize("User:alice", "h", read, t, "a"));
        assert!(
            a.authorize("User:alice", "h", desc, t, "a"),
            "READ implies DESCRIBE"
        );
        assert!(!a.authorize("User:alice", "h", write, t, "a"));
        assert!(!a.authorize("User:alice", "h", read, t, "b"));
        assert!(!a.authorize("User:bob", "h", read, t, "a"));
        a.add(vec![binding(
            "pre-",
            PatternType::Prefixed,
            "User:*",
            AclOperation::All,
            true,
        )]);
        assert!(a.authorize("User:bob", "h", write, t, "pre-x"));
        a.add(vec![binding(
            "pre-x",
            PatternType::Literal,
            "User:bob",
            write,
            false,
        )]);
        assert!(
            !a.authorize("User:bob", "h", write, t, "pre-x"),
            "DENY wins"
        );
        assert!(a.authorize("User:bob", "h", read, t, "pre-x"));
        let gone = a.remove(&AclFilter {
            principal: Some("User:bob".into()),
            ..Default::default()
        });
        assert_eq!(gone.len(), 1);
        assert!(a.authorize("User:bob", "h", write, t, "pre-x"));
        // allow.everyone.if.no.acl.found: only where no ACL names the resource.
        let b = authorizer(true);
        assert!(b.authorize("User:x", "h", read, t, "free"));
        b.add(vec![binding(
            "free",
            PatternType::Literal,
            "User:y",
            read,
            true,
        )]);
        assert!(!b.authorize("User:x", "h", read, t, "free"));
        // Disabled: everything allowed.
        let off = Authorizer::open(None, None, false, None).expect("off");
        assert!(off.authorize("User:x", "h", read, t, "free"));
        assert!(Authorizer::open(Some("com.example.Mine"), None, false, None).is_err());
        assert!(Authorizer::open(Some(AUTHORIZER_CLASSES[1]), Some("alice"), false, None).is_err());
    }

    #[test]
    fn authorize_any_is_kafkas_authorize_by_resource_type() {
        let a = authorizer(false);
        let (w, t) = (AclOperation::Write, ResourceType::Topic);
        assert!(!a.authorize_any("User:alice", "h", w, t), "no ACL");
        assert!(a.authorize_any("User:admin", "h", w, t), "super user");
        a.add(vec![binding(
            "a",
            PatternType::Literal,
            "User:alice",
            w,
            true,
        )]);
        assert!(a.authorize_any("User:alice", "h", w, t));
        assert!(!a.authorize_any("User:bob", "h", w, t));
        assert!(!a.authorize_any("User:alice", "h", w, ResourceType::Group));
        a.add(vec![binding(
            "a",
            PatternType::Literal,
            "User:alice",
            w,
            false,
        )]);
        assert!(
            !a.authorize_any("User:alice", "h", w, t),
            "the one allowed name is denied"
        );
        a.add(vec![binding(
            "p-",
            PatternType::Prefixed,
            "User:alice",
            AclOperation::All,
            true,
        )]);
        assert!(a.authorize_any("User:alice", "h", w, t));
        a.add(vec![binding(
            "p",
            PatternType::Prefixed,
            "User:*",
            w,
            false,
        )]);
        assert!(
            !a.authorize_any("User:alice", "h", w, t),
            "a shorter DENY prefix covers it"
        );
        assert!(authorizer(true).authorize_any("User:x", "h", w, t));
    }

    #[test]
    fn filters_and_codes() {
        let a = authorizer(false);
        a.add(vec![
            binding(
                "a",
                PatternType::Literal,
                "User:alice",
                AclOperation::Read,
                true,
            ),
            binding(
                "p",
                PatternType::Prefixed,
                "User:alice",
                AclOperation::Write,
                true,
            ),
        ]);
        let all = AclFilter::default();
        assert_eq!(a.describe(&all).len(), 2);
        let matching = AclFilter {
            resource_name: Some("pq".into()),
            pattern: Some(None),
            ..Default::default()
        };
        assert_eq!(a.describe(&matching).len(), 1);
        let literal = AclFilter {
            pattern: Some(Some(PatternType::Literal)),
            ..Default::default()
        };
        assert_eq!(a.describe(&literal).len(), 1);
        for c in 2..=14 {
            let op = AclOperation::from_code(c).expect("op");
            assert_eq!(op.code(), c);
        }
        assert!(AclOperation::from_code(1).is_none());
        assert!(AclOperation::from_code(15).is_none());
        assert!(AclOperation::from_code(-3).is_none());
        for c in 2..=7 {
            assert_eq!(ResourceType::from_code(c).expect("rt").code(), c);
        }
    }
}
