//! Security: listeners' security protocols, TLS settings, SASL (PLAIN, SCRAM-SHA-256/512) and
//! the SCRAM credential store, all by Kafka's configuration names.
//!
//! - [`SecurityConfig`] holds the security properties as given (`listener.security.protocol.map`,
//!   `ssl.*`, `sasl.*`, and their `listener.name.<listener>.` overrides) and refuses unknown
//!   ones; [`resolve_listeners`] turns them, once every key is read, into one [`ListenerSpec`]
//!   per client listener (protocol, advertised address, TLS server config, SASL settings).
//! - [`tls`]: the rustls server configuration of a listener (PEM key and chain, client
//!   authentication with a PEM truststore, TLS 1.2/1.3).
//! - [`sasl`]: the per-connection authenticator (SaslHandshake → SaslAuthenticate rounds),
//!   with [`plain`] and [`scram`] as its mechanisms.
//! - [`credentials`]: SCRAM credentials (AlterUserScramCredentials), shared by every shard and
//!   kept durably in a file under the data dir through the `io` seam.
//!
//! The socket side (the TLS record layer over the connection, the pre-authentication request
//! gate) belongs to `server`; this module never touches a socket.

pub mod acl;
pub mod credentials;
pub mod durable;
pub mod dynamic;
pub mod plain;
pub mod principal;
pub mod quota;
pub mod sasl;
pub mod scram;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Kafka's security protocols (`listener.security.protocol.map` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No encryption, no authentication.
    Plaintext,
    /// TLS; the principal comes from the client certificate (or is ANONYMOUS).
    Ssl,
    /// SASL authentication without encryption.
    SaslPlaintext,
    /// SASL authentication inside TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses Kafka's name (`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`).
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    /// Kafka's name of the protocol.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// The connection is encrypted with TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Clients must authenticate with SASL before anything else is served.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The security properties a listener may set, globally or as `listener.name.<l>.<key>`.
/// Each with its help text (the values are checked when the listeners are resolved).
pub const LISTENER_KEYS: &[(&str, &str)] = &[
    ("ssl.keystore.type", "Format of the key store: PEM (the only one supported; Kafka's JKS and PKCS12 are refused with a message)."),
    ("ssl.keystore.location", "PEM file holding the private key (PKCS#8, PKCS#1 or SEC1, unencrypted) and the certificate chain, leaf first. Dynamic, like every ssl.keystore.* and ssl.truststore.* property: `kafka-configs --entity-type brokers --entity-name <id> --alter --add-config listener.name.<l>.ssl.keystore.location=...` reloads it for new connections without a restart."),
    ("ssl.keystore.key", "The private key as inline PEM (instead of ssl.keystore.location)."),
    ("ssl.keystore.certificate.chain", "The certificate chain as inline PEM, leaf first (with ssl.keystore.key)."),
    ("ssl.key.password", "Password of an encrypted PEM key: not supported (refused at start); give an unencrypted key."),
    ("ssl.truststore.type", "Format of the trust store: PEM."),
    ("ssl.truststore.location", "PEM file of the CA certificates client certificates are checked against."),
    ("ssl.truststore.certificates", "The trusted CA certificates as inline PEM (instead of ssl.truststore.location)."),
    ("ssl.client.auth", "Client authentication on TLS listeners: required, requested or none (default none). On an SSL listener the principal is then the client certificate's subject (see ssl.principal.mapping.rules); a SASL_SSL listener asks for certificates only when this is set with its listener.name.<listener>. prefix, as in Kafka."),
    ("ssl.principal.mapping.rules", "How an SSL client certificate's subject DN (RFC 2253, e.g. CN=alice,O=example) becomes the user name of its principal: a comma-separated list of DEFAULT (the DN as it is) and RULE:pattern/replacement/ with an optional L or U (lower or upper case); the first rule whose pattern matches the whole DN applies (default DEFAULT). Patterns are regular expressions without look-around or back-references."),
    ("ssl.allow.dn.changes", "Allow a keystore reloaded while the broker runs to change the certificate's subject DN (default false: refused, as in Kafka)."),
    ("ssl.allow.san.changes", "Allow a keystore reloaded while the broker runs to change the certificate's subject alternative names (default false: refused, as in Kafka)."),
    ("ssl.enabled.protocols", "TLS versions offered: TLSv1.2 and/or TLSv1.3 (default TLSv1.2,TLSv1.3)."),
    ("sasl.server.max.receive.size", "Largest request a SASL listener reads before the client authenticated, in bytes (default 524288); a larger one closes the connection."),
    ("connections.max.reauth.ms", "On a SASL listener, the length of an authenticated session in ms (KIP-368): clients re-authenticate on the connection before it ends (SaslAuthenticate tells them), and a connection whose session ended is closed at its next request. 0 (default): sessions never end."),
    ("sasl.enabled.mechanisms", "SASL mechanisms offered: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (required on a SASL listener; Kafka's default GSSAPI is not supported)."),
];

/// The security properties that are not per listener, and the JAAS ones, with their help text
/// (for `shardlog config-reference`).
pub const REFERENCE_KEYS: &[(&str, &str)] = &[
    ("listener.security.protocol.map", "Security protocol of each listener name, `NAME:PROTOCOL,...` with PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Default: each protocol name maps to itself, a controller listener to PLAINTEXT."),
    ("listener.name.<listener>.plain.sasl.jaas.config", "PLAIN users of a SASL listener, Kafka's form: `org.apache.kafka.common.security.plain.PlainLoginModule required user_<name>=\"<password>\";`."),
    ("listener.name.<listener>.scram-sha-256.sasl.jaas.config", "Accepted for Kafka compatibility (ScramLoginModule); SCRAM users are managed with AlterUserScramCredentials (`kafka-configs --entity-type users`)."),
    ("listener.name.<listener>.scram-sha-512.sasl.jaas.config", "As for scram-sha-256."),
    ("listener.name.<listener>.<mechanism>.connections.max.reauth.ms", "connections.max.reauth.ms for one SASL mechanism of a listener (mechanism in lower case: plain, scram-sha-256, scram-sha-512), over the listener's value."),
    ("authorizer.class.name", "Turns ACL checks on: org.apache.kafka.metadata.authorizer.StandardAuthorizer (or kafka.security.authorizer.AclAuthorizer, the same here). Unset: every request is allowed. ACLs are managed with CreateAcls/DeleteAcls (`kafka-acls`) and kept in DATA_DIR/meta/acls.json."),
    ("super.users", "Principals allowed everything, `User:admin;User:ops`."),
    ("allow.everyone.if.no.acl.found", "With the authorizer on, allow a request on a resource that no ACL names. Default false."),
    ("quota.window.num", "Samples in a client quota's rate (default 11). Client quotas are managed with AlterClientQuotas (`kafka-configs --entity-type users|clients`) and kept in DATA_DIR/meta/client-quotas.json."),
    ("quota.window.size.seconds", "Span of one sample of a client quota's rate, in seconds (default 1)."),
];

/// The authorizer's and the client quotas' properties (broker-wide).
const AUTHORIZER_KEYS: &[&str] = &[
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
    "quota.window.num",
    "quota.window.size.seconds",
];

/// What every connection of the broker shares: the SCRAM credentials, the authorizer, the
/// client quotas and the dynamic broker properties.
#[derive(Clone, Debug)]
pub struct BrokerSecurity {
    /// The SCRAM credentials.
    pub credentials: Arc<credentials::CredentialStore>,
    /// The authorizer (allows everything when `authorizer.class.name` is unset).
    pub authorizer: Arc<acl::Authorizer>,
    /// The client quotas (AlterClientQuotas changes them).
    pub quotas: Arc<quota::QuotaStore>,
    /// The dynamic broker properties (TLS key material reloaded without a restart).
    pub dynamic: Arc<dynamic::DynamicBrokerConfig>,
}

impl BrokerSecurity {
    /// Loads the credentials and ACLs of `data_dir` with the authorizer settings of `sec`.
    pub fn open(
        sec: &SecurityConfig,
        data_dir: &std::path::Path,
    ) -> Result<BrokerSecurity, String> {
        let credentials = Arc::new(credentials::CredentialStore::open(data_dir)?);
        let allow = match sec
            .props
            .get("allow.everyone.if.no.acl.found")
            .map(|v| v.trim())
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(format!(
                    "`allow.everyone.if.no.acl.found`: `{v}` is not true or false"
                ))
            }
        };
        let authorizer = Arc::new(acl::Authorizer::open(
            sec.props.get("authorizer.class.name").map(String::as_str),
            sec.props.get("super.users").map(String::as_str),
            allow,
            Some(data_dir),
        )?);
        let window_part = |key: &str, default: u64| -> Result<u64, String> {
            match sec.props.get(key).map(|v| v.trim()) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (1..=3600).contains(&n) => Ok(n),
                    _ => Err(format!("`{key}`: `{v}` is not a whole number in 1..=3600")),
                },
            }
        };
        let window = quota::QuotaWindow {
            num: window_part("quota.window.num", quota::QUOTA_WINDOW_NUM_DEFAULT as u64)? as usize,
            size_ms: window_part(
                "quota.window.size.seconds",
                quota::QUOTA_WINDOW_SIZE_SECONDS_DEFAULT,
            )? * 1000,
        };
        let quotas = Arc::new(quota::QuotaStore::open(Some(data_dir), window)?);
        let dynamic = Arc::new(dynamic::DynamicBrokerConfig::open(sec, Some(data_dir))?);
        Ok(BrokerSecurity {
            credentials,
            authorizer,
            quotas,
            dynamic,
        })
    }
}

/// The JAAS properties, only as `listener.name.<l>.<mechanism>.sasl.jaas.config`; and the
/// per-mechanism `listener.name.<l>.<mechanism>.connections.max.reauth.ms`.
const JAAS_MECHANISMS: &[&str] = &["plain", "scram-sha-256", "scram-sha-512"];

/// The security properties as given, before they are checked against the listeners.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// `listener.security.protocol.map`; `None`: Kafka's default (each protocol name maps to
    /// itself, a controller listener to PLAINTEXT).
    pub protocol_map: Option<Vec<(String, SecurityProtocol)>>,
    /// `advertised.listeners` entries with their listener names (upper case).
    pub advertised: Vec<(String, String, u16)>,
    /// Every `ssl.*` / `sasl.*` property and `listener.name.*` override, by its full name.
    pub props: BTreeMap<String, String>,
}

/// One client listener, resolved: where it listens, what it speaks, what clients are told.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// The listener's name, upper case (`PLAINTEXT`, `SASL_SSL`, `EXTERNAL`, ...).
    pub name: String,
    /// The address every shard binds (SO_REUSEPORT).
    pub addr: SocketAddr,
    /// Its security protocol.
    pub protocol: SecurityProtocol,
    /// Host and port given in Metadata to clients that came in on this listener.
    pub advertised: (String, u16),
    /// The TLS server configuration new connections get; `Some` exactly when the protocol
    /// uses TLS. A dynamic broker config change replaces it (`dynamic.rs`).
    pub tls: Option<Arc<dynamic::TlsSlot>>,
    /// The SASL settings; `Some` exactly when the protocol uses SASL.
    pub sasl: Option<Arc<sasl::SaslSettings>>,
    /// `ssl.principal.mapping.rules`: the user name of an SSL client's certificate subject.
    pub principal_mapper: Arc<principal::SslPrincipalMapper>,
}

impl SecurityConfig {
    /// Applies one property if it is a security property: `None` when the key is not one.
    pub fn apply(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        if key == "listener.security.protocol.map" {
            return Some(parse_protocol_map(value).map(|m| self.protocol_map = Some(m)));
        }
        if LISTENER_KEYS.iter().any(|(k, _)| *k == key) || AUTHORIZER_KEYS.contains(&key) {
            self.props.insert(key.to_string(), value.to_string());
            return Some(Ok(()));
        }
        let rest = key.strip_prefix("listener.name.")?;
        let (listener, sub) = rest.split_once('.')?;
        let known = LISTENER_KEYS.iter().any(|(k, _)| *k == sub)
            || JAAS_MECHANISMS.iter().any(|m| {
                sub.strip_prefix(m)
                    .is_some_and(|k| k == ".sasl.jaas.config" || k == ".connections.max.reauth.ms")
            });
        if !known || listener.is_empty() {
            return None;
        }
        // Kafka lower-cases the listener name in prefixed keys; compare without case.
        let key = format!("listener.name.{}.{sub}", listener.to_ascii_lowercase());
        self.props.insert(key, value.to_string());
        Some(Ok(()))
    }

    /// Records `advertised.listeners` by name (`NAME://HOST:PORT,...`; a bare `HOST:PORT` is
    /// the first client listener's).
    pub fn set_advertised(&mut self, value: &str) -> Result<(), String> {
        let mut out = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, rest) = entry.split_once("://").unwrap_or(("", entry));
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("`{entry}` is not NAME://HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("`{entry}` has a bad port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            out.push((name.to_ascii_uppercase(), host.to_string(), port));
        }
        self.advertised = out;
        Ok(())
    }

    /// A listener's value of `key`: its `listener.name.<l>.` override, else the global one.
    pub fn lookup(&self, listener: &str, key: &str) -> Option<&str> {
        let prefixed = format!("listener.name.{}.{key}", listener.to_ascii_lowercase());
        self.props
            .get(&prefixed)
            .or_else(|| self.props.get(key))
            .map(String::as_str)
    }

    /// The security protocol of a listener name, by `listener.security.protocol.map` or
    /// Kafka's default map.
    pub fn protocol_of(&self, name: &str, is_controller: bool) -> Result<SecurityProtocol, String> {
        if let Some(map) = &self.protocol_map {
            return map
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    format!("listener {name} is not in listener.security.protocol.map")
                });
        }
        match SecurityProtocol::parse(name) {
            Some(p) => Ok(p),
            None if is_controller => Ok(SecurityProtocol::Plaintext),
            None => Err(format!(
                "listener {name} needs a security protocol: set listener.security.protocol.map \
                 (e.g. {name}:SASL_SSL)"
            )),
        }
    }
}

fn parse_protocol_map(v: &str) -> Result<Vec<(String, SecurityProtocol)>, String> {
    let mut out: Vec<(String, SecurityProtocol)> = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, proto) = entry
            .split_once(':')
            .ok_or_else(|| format!("`{entry}` is not NAME:PROTOCOL"))?;
        let p = SecurityProtocol::parse(proto).ok_or_else(|| {
            format!("`{proto}` is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        })?;
        let name = name.trim().to_ascii_uppercase();
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("listener {name} is mapped twice"));
        }
        out.push((name, p));
    }
    Ok(out)
}

/// Resolves the client listeners (`(name, address)`, controller listeners already left out)
/// into their specs: protocol, advertised address (the `advertised.listeners` entry of the
/// same name, else `default_advertised` for the first listener, else the bind address), TLS
/// and SASL settings. Every refusal names the property. `credentials` serves SCRAM.
pub fn resolve_listeners(
    sec: &SecurityConfig,
    listeners: &[(String, SocketAddr)],
    default_advertised: (String, u16),
    credentials: &Arc<credentials::CredentialStore>,
) -> Result<Vec<ListenerSpec>, String> {
    let mut out = Vec::new();
    for (i, (name, addr)) in listeners.iter().enumerate() {
        let protocol = sec.protocol_of(name, false)?;
        let named = sec.advertised.iter().find(|(n, _, _)| n == name);
        let advertised = match named {
            Some((_, h, p)) => (h.clone(), *p),
            None if i == 0 => default_advertised.clone(),
            None => (addr.ip().to_string(), addr.port()),
        };
        let tls = if protocol.uses_tls() {
            let (config, leaf) = tls::server_config_and_leaf(sec, name, protocol)?;
            Some(Arc::new(dynamic::TlsSlot::new(config, leaf)))
        } else {
            None
        };
        let sasl = if protocol.uses_sasl() {
            Some(Arc::new(sasl::SaslSettings::from_config(
                sec,
                name,
                credentials.clone(),
            )?))
        } else {
            None
        };
        // Parsed on every listener, as Kafka's principal builder does: bad rules stop the start.
        let rules = sec
            .lookup(name, "ssl.principal.mapping.rules")
            .unwrap_or(principal::DEFAULT_SSL_PRINCIPAL_MAPPING_RULES);
        let principal_mapper = Arc::new(
            principal::SslPrincipalMapper::parse(rules)
                .map_err(|e| format!("listener {name}: `ssl.principal.mapping.rules`: {e}"))?,
        );
        out.push(ListenerSpec {
            name: name.clone(),
            addr: *addr,
            protocol,
            advertised,
            tls,
            sasl,
            principal_mapper,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_accepted_globally_and_per_listener_and_unknown_ones_are_not() {
        let mut c = SecurityConfig::default();
        assert!(matches!(
            c.apply("ssl.client.auth", "required"),
            Some(Ok(()))
        ));
        assert!(matches!(
            c.apply("listener.name.SASL_SSL.sasl.enabled.mechanisms", "PLAIN"),
            Some(Ok(()))
        ));
        assert!(matches!(
            c.apply("listener.name.sasl_ssl.plain.sasl.jaas.config", "x"),
            Some(Ok(()))
        ));
        assert!(c.apply("listener.name.sasl_ssl.nope", "x").is_none());
        assert!(c.apply("ssl.nope", "x").is_none());
        assert_eq!(
            c.lookup("SASL_SSL", "sasl.enabled.mechanisms"),
            Some("PLAIN")
        );
        assert_eq!(c.lookup("OTHER", "ssl.client.auth"), Some("required"));
        assert_eq!(c.lookup("OTHER", "sasl.enabled.mechanisms"), None);
    }

    #[test]
    fn protocol_map_default_and_explicit() {
        let mut c = SecurityConfig::default();
        assert_eq!(
            c.protocol_of("SASL_SSL", false),
            Ok(SecurityProtocol::SaslSsl)
        );
        assert_eq!(
            c.protocol_of("CONTROLLER", true),
            Ok(SecurityProtocol::Plaintext)
        );
        assert!(c.protocol_of("EXTERNAL", false).is_err());
        assert!(matches!(
            c.apply(
                "listener.security.protocol.map",
                "EXTERNAL:SASL_SSL,INTERNAL:PLAINTEXT"
            ),
            Some(Ok(()))
        ));
        assert_eq!(
            c.protocol_of("EXTERNAL", false),
            Ok(SecurityProtocol::SaslSsl)
        );
        assert!(c.protocol_of("PLAINTEXT", false).is_err());
        assert!(matches!(
            c.apply("listener.security.protocol.map", "A:TLS"),
            Some(Err(_))
        ));
    }

    #[test]
    fn advertised_by_name() {
        let mut c = SecurityConfig::default();
        c.set_advertised("PLAINTEXT://h1:9092,sasl_ssl://[::1]:9093")
            .expect("ok");
        assert_eq!(
            c.advertised,
            vec![
                ("PLAINTEXT".into(), "h1".into(), 9092),
                ("SASL_SSL".into(), "::1".into(), 9093)
            ]
        );
        assert!(c.set_advertised("PLAINTEXT://h1").is_err());
    }
}
