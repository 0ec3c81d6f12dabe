//! A TLS listener's rustls server configuration, from Kafka's `ssl.*` properties.
//!
//! Key material is PEM only (`ssl.keystore.type=PEM`): a file at `ssl.keystore.location`
//! holding the unencrypted private key and the certificate chain (leaf first), or the inline
//! `ssl.keystore.key` and `ssl.keystore.certificate.chain`. Client certificates are checked
//! against the PEM truststore (`ssl.truststore.location` or `ssl.truststore.certificates`)
//! when `ssl.client.auth` is `required` or `requested`. Crypto is rustls' ring provider.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::{SecurityConfig, SecurityProtocol};

/// `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client must present a certificate the truststore accepts.
    Required,
    /// A client may present one; if it does, it must be valid.
    Requested,
    /// No client certificate is asked for.
    None,
}

fn bad(listener: &str, key: &str, why: impl std::fmt::Display) -> String {
    format!("listener {listener}: `{key}`: {why}")
}

/// The ring crypto provider every TLS and SCRAM operation of the broker uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Fills `out` with cryptographically secure random bytes (SCRAM nonces and salts).
pub fn random_bytes(out: &mut [u8]) -> Result<(), String> {
    provider()
        .secure_random
        .fill(out)
        .map_err(|_| "no secure random source".to_string())
}

/// The PEM text of `inline_key`'s value, or of the file at `location_key`.
fn pem_source(
    sec: &SecurityConfig,
    listener: &str,
    inline_key: &str,
    location_key: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(v) = sec.lookup(listener, inline_key) {
        return Ok(Some(v.as_bytes().to_vec()));
    }
    match sec.lookup(listener, location_key) {
        Some(path) => std::fs::read(path)
            .map(Some)
            .map_err(|e| bad(listener, location_key, format!("cannot read {path}: {e}"))),
        None => Ok(None),
    }
}

fn check_pem_type(sec: &SecurityConfig, listener: &str, key: &str) -> Result<(), String> {
    match sec.lookup(listener, key) {
        None => Ok(()),
        Some(t) if t.trim().eq_ignore_ascii_case("PEM") => Ok(()),
        Some(t) => Err(bad(
            listener,
            key,
            format!("`{t}` is not supported; convert the store to PEM and set PEM"),
        )),
    }
}

/// `ssl.client.auth` of a listener. On SASL_SSL only its `listener.name.<l>.` form counts, as
/// in Kafka (the broker-wide value is for SSL listeners; setting it alone is warned about).
fn client_auth(
    sec: &SecurityConfig,
    listener: &str,
    protocol: SecurityProtocol,
) -> Result<ClientAuth, String> {
    const KEY: &str = "ssl.client.auth";
    let value = if protocol == SecurityProtocol::SaslSsl {
        let prefixed = format!("listener.name.{}.{KEY}", listener.to_ascii_lowercase());
        let own = sec.props.get(&prefixed).map(String::as_str);
        if own.is_none()
            && sec
                .props
                .get(KEY)
                .is_some_and(|v| !v.trim().eq_ignore_ascii_case("none"))
        {
            tracing::warn!(
                listener,
                "broker-wide `{KEY}` applies to SSL listeners only; set `{prefixed}` to ask \
                 SASL_SSL clients for certificates"
            );
        }
        own
    } else {
        sec.lookup(listener, KEY)
    };
    match value.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(ClientAuth::None),
        Some(s) if s == "none" => Ok(ClientAuth::None),
        Some(s) if s == "required" => Ok(ClientAuth::Required),
        Some(s) if s == "requested" => Ok(ClientAuth::Requested),
        Some(s) => Err(bad(
            listener,
            KEY,
            format!("`{s}` is not required, requested or none"),
        )),
    }
}

/// Builds the server configuration of TLS listener `listener` (of `protocol`). Every refusal
/// names the listener and the property.
pub fn server_config(
    sec: &SecurityConfig,
    listener: &str,
    protocol: SecurityProtocol,
) -> Result<Arc<ServerConfig>, String> {
    server_config_and_leaf(sec, listener, protocol).map(|(c, _)| c)
}

/// [`server_config`], with the certificate it presents (the chain's leaf).
pub fn server_config_and_leaf(
    sec: &SecurityConfig,
    listener: &str,
    protocol: SecurityProtocol,
) -> Result<(Arc<ServerConfig>, CertificateDer<'static>), String> {
    check_pem_type(sec, listener, "ssl.keystore.type")?;
    check_pem_type(sec, listener, "ssl.truststore.type")?;
    if sec.lookup(listener, "ssl.key.password").is_some() {
        return Err(bad(
            listener,
            "ssl.key.password",
            "encrypted PEM keys are not supported; give an unencrypted PKCS#8 key",
        ));
    }
    let keystore = pem_source(sec, listener, "ssl.keystore.key", "ssl.keystore.location")?
        .ok_or_else(|| {
            bad(
                listener,
                "ssl.keystore.location",
                "a TLS listener needs a key and certificate chain (ssl.keystore.location, or \
                 ssl.keystore.key with ssl.keystore.certificate.chain)",
            )
        })?;
    let key = PrivateKeyDer::from_pem_slice(&keystore)
        .map_err(|e| bad(listener, "ssl.keystore.key", format!("no private key: {e}")))?;
    let chain_pem = match sec.lookup(listener, "ssl.keystore.certificate.chain") {
        Some(v) => v.as_bytes().to_vec(),
        None => keystore,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(listener, "ssl.keystore.certificate.chain", e))?;
    if chain.is_empty() {
        return Err(bad(
            listener,
            "ssl.keystore.certificate.chain",
            "no certificate found",
        ));
    }
    let versions = enabled_versions(sec, listener)?;
    let auth = client_auth(sec, listener, protocol)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| bad(listener, "ssl.enabled.protocols", e))?;
    let builder = if auth == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        let trust = pem_source(
            sec,
            listener,
            "ssl.truststore.certificates",
            "ssl.truststore.location",
        )?
        .ok_or_else(|| {
            bad(
                listener,
                "ssl.truststore.location",
                "ssl.client.auth needs a truststore (ssl.truststore.location or \
                 ssl.truststore.certificates)",
            )
        })?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&trust) {
            let cert = cert.map_err(|e| bad(listener, "ssl.truststore.certificates", e))?;
            roots
                .add(cert)
                .map_err(|e| bad(listener, "ssl.truststore.certificates", e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if auth == ClientAuth::Requested {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier
            .build()
            .map_err(|e| bad(listener, "ssl.truststore.certificates", e))?;
        builder.with_client_cert_verifier(verifier)
    };
    let leaf = chain[0].clone();
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad(listener, "ssl.keystore.location", e))?;
    Ok((Arc::new(config), leaf))
}

fn enabled_versions(
    sec: &SecurityConfig,
    listener: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let Some(list) = sec.lookup(listener, "ssl.enabled.protocols") else {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    };
    let mut out = Vec::new();
    for v in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match v {
            "TLSv1.3" => out.push(&rustls::version::TLS13),
            "TLSv1.2" => out.push(&rustls::version::TLS12),
            other => {
                return Err(bad(
                    listener,
                    "ssl.enabled.protocols",
                    format!("`{other}` is not TLSv1.2 or TLSv1.3"),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(bad(listener, "ssl.enabled.protocols", "empty"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_property() {
        let mut c = SecurityConfig::default();
        let e = server_config(&c, "SSL", SecurityProtocol::Ssl).expect_err("no keystore");
        assert!(e.contains("ssl.keystore.location"), "{e}");
        c.props.insert("ssl.keystore.type".into(), "JKS".into());
        let e = server_config(&c, "SSL", SecurityProtocol::Ssl).expect_err("JKS");
        assert!(e.contains("ssl.keystore.type"), "{e}");
        c.props.insert("ssl.keystore.type".into(), "PEM".into());
        c.props.insert("ssl.keystore.key".into(), "not pem".into());
        let e = server_config(&c, "SSL", SecurityProtocol::Ssl).expect_err("garbage key");
        assert!(e.contains("no private key"), "{e}");
        c.props
            .insert("ssl.enabled.protocols".into(), "TLSv1.1".into());
        assert!(enabled_versions(&c, "SSL").is_err());
    }
}
