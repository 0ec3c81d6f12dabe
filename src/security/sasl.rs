//! One connection's SASL authentication, as Kafka's server runs it: SaslHandshake names the
//! mechanism, then SaslAuthenticate rounds carry its tokens until it succeeds (the connection
//! is then authenticated as `User:<name>`) or fails (the connection is then closed after the
//! answer, by the caller).
//!
//! Re-authentication (KIP-368): with `connections.max.reauth.ms` set, a successful
//! authentication starts a session of that length (SaslAuthenticate v1+ tells the client in
//! `session_lifetime_ms`). The client re-authenticates on the same connection with a new
//! SaslHandshake (the same mechanism) and SaslAuthenticate (the same principal, else the
//! connection fails), at most once a second; the caller closes a connection whose session
//! expired when it sends anything but that handshake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::credentials::CredentialStore;
use super::plain::PlainUsers;
use super::scram::{ScramMechanism, ScramServer};
use super::SecurityConfig;
use crate::error_code::ErrorCode;

/// Kafka's default `sasl.server.max.receive.size`: the largest request frame a SASL listener
/// reads before the client has authenticated.
pub const SERVER_MAX_RECEIVE_BYTES_DEFAULT: usize = 512 * 1024;

/// The SASL mechanisms shardlog serves.
pub const SUPPORTED_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A SASL listener's settings.
#[derive(Debug)]
pub struct SaslSettings {
    /// `sasl.enabled.mechanisms`, in the configured order.
    pub mechanisms: Vec<String>,
    /// The PLAIN users (`plain.sasl.jaas.config`), when PLAIN is enabled.
    pub plain: Option<PlainUsers>,
    /// The SCRAM credentials (the broker's one store).
    pub credentials: Arc<CredentialStore>,
    /// `sasl.server.max.receive.size`: largest frame read before authentication.
    pub max_receive_bytes: usize,
    /// `connections.max.reauth.ms` of each enabled mechanism (its
    /// `listener.name.<l>.<mechanism>.` form, else the listener's, else the broker's): the
    /// session length after an authentication, in ms (0: sessions never expire and
    /// re-authentication is refused, Kafka's default).
    pub max_reauth_ms: Vec<(String, u64)>,
}

impl SaslSettings {
    /// The session length of `mechanism`, in ms (0: none).
    pub fn max_reauth_ms_of(&self, mechanism: &str) -> u64 {
        self.max_reauth_ms
            .iter()
            .find(|(m, _)| m == mechanism)
            .map_or(0, |(_, ms)| *ms)
    }
}

/// Kafka's shortest interval between two re-authentications of one connection.
const MIN_REAUTH_INTERVAL: Duration = Duration::from_secs(1);

impl SaslSettings {
    /// The settings of SASL listener `listener`; every refusal names the property.
    pub fn from_config(
        sec: &SecurityConfig,
        listener: &str,
        credentials: Arc<CredentialStore>,
    ) -> Result<SaslSettings, String> {
        let lower = listener.to_ascii_lowercase();
        let key = "sasl.enabled.mechanisms";
        let list = sec.lookup(listener, key).ok_or_else(|| {
            format!(
                "listener {listener}: `{key}` is not set (Kafka's default GSSAPI is not \
                 supported): set it to PLAIN, SCRAM-SHA-256 and/or SCRAM-SHA-512"
            )
        })?;
        let mut mechanisms = Vec::new();
        for m in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let m = m.to_ascii_uppercase();
            if !SUPPORTED_MECHANISMS.contains(&m.as_str()) {
                return Err(format!(
                    "listener {listener}: `{key}`: {m} is not supported (PLAIN, SCRAM-SHA-256, \
                     SCRAM-SHA-512)"
                ));
            }
            if !mechanisms.contains(&m) {
                mechanisms.push(m);
            }
        }
        if mechanisms.is_empty() {
            return Err(format!("listener {listener}: `{key}` is empty"));
        }
        let plain = if mechanisms.iter().any(|m| m == "PLAIN") {
            let jaas_key = format!("listener.name.{lower}.plain.sasl.jaas.config");
            let jaas = sec.props.get(&jaas_key).ok_or_else(|| {
                format!("listener {listener}: PLAIN is enabled but `{jaas_key}` is not set")
            })?;
            let users = PlainUsers::from_jaas(jaas).map_err(|e| format!("`{jaas_key}`: {e}"))?;
            Some(users)
        } else {
            None
        };
        let max_key = "sasl.server.max.receive.size";
        let max_receive_bytes = match sec.lookup(listener, max_key) {
            None => SERVER_MAX_RECEIVE_BYTES_DEFAULT,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{max_key}`: `{v}` is not a positive number"))?,
        };
        let reauth_key = "connections.max.reauth.ms";
        let mut max_reauth_ms = Vec::new();
        for m in &mechanisms {
            let own = format!(
                "listener.name.{lower}.{}.{reauth_key}",
                m.to_ascii_lowercase()
            );
            let ms = match sec
                .props
                .get(&own)
                .map(String::as_str)
                .or_else(|| sec.lookup(listener, reauth_key))
            {
                None => 0,
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    format!("`{reauth_key}`: `{v}` is not a number of milliseconds")
                })?,
            };
            max_reauth_ms.push((m.clone(), ms));
        }
        Ok(SaslSettings {
            mechanisms,
            plain,
            credentials,
            max_receive_bytes,
            max_reauth_ms,
        })
    }
}

/// A mechanism's answer to one token.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this token and expect another.
    Continue(Vec<u8>),
    /// Authenticated as `principal` (the user name); send `response` as the last token.
    Done {
        /// The authenticated user name.
        principal: String,
        /// The final token for the client (empty for PLAIN).
        response: Vec<u8>,
    },
}

/// Why a SASL request was refused: the error code and message for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct SaslError {
    /// Kafka's code: UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE or
    /// SASL_AUTHENTICATION_FAILED.
    pub code: ErrorCode,
    /// The message for the client (and the broker's log line).
    pub message: String,
}

enum State {
    AwaitHandshake,
    Plain,
    Scram(ScramServer),
    /// Re-authentication asked for another mechanism: the next token fails with this.
    BadMechanism(String),
    Authenticated(String),
    Failed,
}

/// What a re-authentication must keep: the principal and mechanism it started from.
struct Previous {
    principal: String,
    mechanism: String,
}

/// One connection's authentication state.
pub struct Authenticator {
    settings: Arc<SaslSettings>,
    state: State,
    /// The mechanism of the last successful handshake.
    mechanism: Option<String>,
    /// When the session ends (`connections.max.reauth.ms` after the last authentication).
    session_expires: Option<Instant>,
    /// When the last re-authentication began.
    last_reauth: Option<Instant>,
    /// Set while a re-authentication runs.
    previous: Option<Previous>,
}

impl Authenticator {
    /// A connection that has not yet sent SaslHandshake.
    pub fn new(settings: Arc<SaslSettings>) -> Authenticator {
        Authenticator {
            settings,
            state: State::AwaitHandshake,
            mechanism: None,
            session_expires: None,
            last_reauth: None,
            previous: None,
        }
    }

    /// The enabled mechanisms (the SaslHandshake response lists them).
    pub fn mechanisms(&self) -> &[String] {
        &self.settings.mechanisms
    }

    /// The authenticated user, once authentication succeeded (during a re-authentication,
    /// the user it started from).
    pub fn principal(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated(p) => Some(p),
            _ => self.previous.as_ref().map(|p| p.principal.as_str()),
        }
    }

    /// Authenticated, and no re-authentication is under way.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated(_))
    }

    /// The session of an authenticated connection has ended (`connections.max.reauth.ms`
    /// passed without a re-authentication).
    pub fn session_expired(&self, now: Instant) -> bool {
        self.is_authenticated() && self.session_expires.is_some_and(|t| now >= t)
    }

    /// The `session_lifetime_ms` of a SaslAuthenticate that completed an authentication.
    pub fn session_lifetime_ms(&self) -> i64 {
        let ms = self
            .mechanism
            .as_deref()
            .map_or(0, |m| self.settings.max_reauth_ms_of(m));
        i64::try_from(ms).unwrap_or(i64::MAX)
    }

    /// A SaslHandshake on an authenticated connection: starts a re-authentication when the
    /// listener has sessions (`connections.max.reauth.ms`) and the last one began at least a
    /// second ago; false otherwise (the handshake is then refused, as in Kafka).
    pub fn begin_reauthentication(&mut self, now: Instant) -> bool {
        let State::Authenticated(principal) = &self.state else {
            return false;
        };
        if self.session_expires.is_none()
            || self
                .last_reauth
                .is_some_and(|t| now.saturating_duration_since(t) < MIN_REAUTH_INTERVAL)
        {
            return false;
        }
        self.previous = Some(Previous {
            principal: principal.clone(),
            mechanism: self.mechanism.clone().unwrap_or_default(),
        });
        self.last_reauth = Some(now);
        self.state = State::AwaitHandshake;
        true
    }

    /// Authentication failed or was refused: nothing more is served on the connection.
    pub fn failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// The largest frame to read before authentication succeeded.
    pub fn max_receive_bytes(&self) -> usize {
        self.settings.max_receive_bytes
    }

    /// SaslHandshake: selects `mechanism`. A refusal fails the connection.
    pub fn handshake(&mut self, mechanism: &str) -> Result<(), SaslError> {
        if !matches!(self.state, State::AwaitHandshake) {
            self.state = State::Failed;
            return Err(SaslError {
                code: ErrorCode::ILLEGAL_SASL_STATE,
                message: "SaslHandshake after the mechanism was already selected".into(),
            });
        }
        if !self.settings.mechanisms.iter().any(|m| m == mechanism) {
            self.state = State::Failed;
            return Err(SaslError {
                code: ErrorCode::UNSUPPORTED_SASL_MECHANISM,
                message: format!(
                    "Unsupported SASL mechanism {mechanism}; enabled: {}",
                    self.settings.mechanisms.join(",")
                ),
            });
        }
        if let Some(p) = self.previous.as_ref().filter(|p| p.mechanism != mechanism) {
            // Kafka answers the handshake and fails the token that follows.
            self.state = State::BadMechanism(format!(
                "SASL mechanism '{mechanism}' requested by client is not supported for \
                 re-authentication of mechanism '{}'",
                p.mechanism
            ));
            return Ok(());
        }
        self.state = match ScramMechanism::from_name(mechanism) {
            Some(m) => State::Scram(ScramServer::new(m)),
            None => State::Plain,
        };
        self.mechanism = Some(mechanism.to_string());
        Ok(())
    }

    /// SaslAuthenticate: one token of the selected mechanism. A refusal fails the connection.
    /// A completed authentication starts a session (see `connections.max.reauth.ms`).
    pub fn authenticate(&mut self, token: &[u8]) -> Result<Step, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let result = match state {
            State::Plain => {
                let users = self.settings.plain.as_ref();
                match users.map(|u| u.authenticate(token)) {
                    Some(Ok(user)) => Ok(Step::Done {
                        principal: user,
                        response: Vec::new(),
                    }),
                    Some(Err(e)) => Err(e),
                    None => Err("PLAIN has no users on this listener".into()),
                }
            }
            State::Scram(mut server) => match server.step(token, &self.settings.credentials) {
                Ok(Step::Continue(t)) => {
                    self.state = State::Scram(server);
                    return Ok(Step::Continue(t));
                }
                other => other,
            },
            State::BadMechanism(why) => Err(why),
            State::AwaitHandshake | State::Authenticated(_) | State::Failed => {
                return Err(SaslError {
                    code: ErrorCode::ILLEGAL_SASL_STATE,
                    message: "SaslAuthenticate without a SaslHandshake selecting a mechanism"
                        .into(),
                });
            }
        };
        match result {
            Ok(Step::Done {
                principal,
                response,
            }) => {
                if let Some(p) = self.previous.take() {
                    if p.principal != principal {
                        return Err(SaslError {
                            code: ErrorCode::SASL_AUTHENTICATION_FAILED,
                            message: format!(
                                "Cannot change principals during re-authentication from \
                                 User:{}: User:{principal}",
                                p.principal
                            ),
                        });
                    }
                }
                let ms = self
                    .mechanism
                    .as_deref()
                    .map_or(0, |m| self.settings.max_reauth_ms_of(m));
                self.session_expires = (ms > 0).then(|| Instant::now() + Duration::from_millis(ms));
                self.state = State::Authenticated(principal.clone());
                Ok(Step::Done {
                    principal,
                    response,
                })
            }
            Ok(Step::Continue(t)) => Ok(Step::Continue(t)),
            Err(message) => Err(SaslError {
                code: ErrorCode::SASL_AUTHENTICATION_FAILED,
                message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mechs: &str) -> Arc<SaslSettings> {
        let mut c = SecurityConfig::default();
        c.apply("sasl.enabled.mechanisms", mechs);
        c.apply(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="pw";"#,
        );
        Arc::new(
            SaslSettings::from_config(&c, "SASL_PLAINTEXT", Arc::new(CredentialStore::in_memory()))
                .expect("settings"),
        )
    }

    #[test]
    fn plain_succeeds_once_and_then_the_state_is_illegal() {
        let mut a = Authenticator::new(settings("PLAIN,SCRAM-SHA-512"));
        assert_eq!(
            a.authenticate(b"\0alice\0pw").err().map(|e| e.code),
            Some(ErrorCode::ILLEGAL_SASL_STATE)
        );
        let mut a = Authenticator::new(settings("PLAIN"));
        a.handshake("PLAIN").expect("enabled");
        assert!(matches!(
            a.authenticate(b"\0alice\0pw"),
            Ok(Step::Done { .. })
        ));
        assert_eq!(a.principal(), Some("alice"));
        assert_eq!(
            a.handshake("PLAIN").err().map(|e| e.code),
            Some(ErrorCode::ILLEGAL_SASL_STATE)
        );
    }

    #[test]
    fn wrong_password_and_unsupported_mechanism_fail_the_connection() {
        let mut a = Authenticator::new(settings("PLAIN"));
        a.handshake("PLAIN").expect("enabled");
        let e = a.authenticate(b"\0alice\0nope").expect_err("refused");
        assert_eq!(e.code, ErrorCode::SASL_AUTHENTICATION_FAILED);
        assert!(a.failed());
        let mut a = Authenticator::new(settings("PLAIN"));
        let e = a.handshake("SCRAM-SHA-256").expect_err("not enabled");
        assert_eq!(e.code, ErrorCode::UNSUPPORTED_SASL_MECHANISM);
        assert!(a.failed());
    }

    #[test]
    fn reauthentication_keeps_mechanism_and_principal_and_renews_the_session() {
        let mut c = SecurityConfig::default();
        c.apply("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512");
        c.apply(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config",
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="pw" user_bob="pw";"#,
        );
        c.apply("connections.max.reauth.ms", "60000");
        c.apply(
            "listener.name.sasl_plaintext.scram-sha-512.connections.max.reauth.ms",
            "5000",
        );
        let s = Arc::new(
            SaslSettings::from_config(&c, "SASL_PLAINTEXT", Arc::new(CredentialStore::in_memory()))
                .expect("settings"),
        );
        let login = |a: &mut Authenticator, mech: &str, user: &str| {
            a.handshake(mech).expect("handshake");
            a.authenticate(format!("\0{user}\0pw").as_bytes())
        };
        let mut a = Authenticator::new(s.clone());
        assert!(
            !a.begin_reauthentication(Instant::now()),
            "not authenticated"
        );
        assert!(login(&mut a, "PLAIN", "alice").is_ok());
        assert_eq!(a.session_lifetime_ms(), 60_000);
        assert_eq!(s.max_reauth_ms_of("SCRAM-SHA-512"), 5_000, "per mechanism");
        let now = Instant::now();
        assert!(!a.session_expired(now));
        assert!(a.session_expired(now + Duration::from_secs(61)));
        assert!(a.begin_reauthentication(now));
        assert_eq!(a.principal(), Some("alice"), "kept while re-authenticating");
        assert!(!a.is_authenticated());
        assert!(login(&mut a, "PLAIN", "alice").is_ok());
        assert!(a.is_authenticated());
        // At most once a second.
        assert!(!a.begin_reauthentication(now + Duration::from_millis(500)));
        assert!(a.begin_reauthentication(now + Duration::from_secs(2)));
        let e = login(&mut a, "PLAIN", "bob").expect_err("another principal");
        assert!(e.message.contains("Cannot change principals"), "{e:?}");
        assert!(a.failed());
        let mut a = Authenticator::new(s);
        assert!(login(&mut a, "PLAIN", "alice").is_ok());
        assert!(a.begin_reauthentication(Instant::now()));
        let e = login(&mut a, "SCRAM-SHA-512", "alice").expect_err("another mechanism");
        assert!(
            e.message.contains("re-authentication of mechanism 'PLAIN'"),
            "{e:?}"
        );
        // Without connections.max.reauth.ms there is no session and no re-authentication.
        let mut a = Authenticator::new(settings("PLAIN"));
        assert!(login(&mut a, "PLAIN", "alice").is_ok());
        assert!(!a.session_expired(Instant::now() + Duration::from_secs(3600)));
        assert!(!a.begin_reauthentication(Instant::now()));
        assert_eq!(a.session_lifetime_ms(), 0);
    }

    #[test]
    fn config_refusals() {
        let creds = Arc::new(CredentialStore::in_memory());
        let mut c = SecurityConfig::default();
        let e = SaslSettings::from_config(&c, "SASL_SSL", creds.clone()).expect_err("unset");
        assert!(e.contains("GSSAPI"), "{e}");
        c.apply("sasl.enabled.mechanisms", "GSSAPI");
        assert!(SaslSettings::from_config(&c, "SASL_SSL", creds.clone()).is_err());
        c.apply("sasl.enabled.mechanisms", "PLAIN");
        let e = SaslSettings::from_config(&c, "SASL_SSL", creds.clone()).expect_err("no jaas");
        assert!(
            e.contains("listener.name.sasl_ssl.plain.sasl.jaas.config"),
            "{e}"
        );
        c.apply("sasl.enabled.mechanisms", "SCRAM-SHA-512");
        let s = SaslSettings::from_config(&c, "SASL_SSL", creds).expect("scram needs no jaas");
        assert_eq!(s.max_receive_bytes, SERVER_MAX_RECEIVE_BYTES_DEFAULT);
    }
}
