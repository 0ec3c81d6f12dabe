//! One connection's SASL authentication, as Kafka's server runs it: SaslHandshake names the
//! mechanism, then SaslAuthenticate rounds carry its tokens until it succeeds (the connection
//! is then authenticated as `User:<name>`) or fails (the connection is then closed after the
//! answer, by the caller).

use std::sync::Arc;

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
}

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
        Ok(SaslSettings {
            mechanisms,
            plain,
            credentials,
            max_receive_bytes,
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
    Authenticated(String),
    Failed,
}

/// One connection's authentication state.
pub struct Authenticator {
    settings: Arc<SaslSettings>,
    state: State,
}

impl Authenticator {
    /// A connection that has not yet sent SaslHandshake.
    pub fn new(settings: Arc<SaslSettings>) -> Authenticator {
        Authenticator {
            settings,
            state: State::AwaitHandshake,
        }
    }

    /// The enabled mechanisms (the SaslHandshake response lists them).
    pub fn mechanisms(&self) -> &[String] {
        &self.settings.mechanisms
    }

    /// The authenticated user, once authentication succeeded.
    pub fn principal(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated(p) => Some(p),
            _ => None,
        }
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
        self.state = match ScramMechanism::from_name(mechanism) {
            Some(m) => State::Scram(ScramServer::new(m)),
            None => State::Plain,
        };
        Ok(())
    }

    /// SaslAuthenticate: one token of the selected mechanism. A refusal fails the connection.
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
