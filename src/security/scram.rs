//! SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them: the
//! server's side of the exchange and the credential derivation.
//!
//! The exchange is two rounds: client-first (`n,,n=<user>,r=<nonce>`) → server-first
//! (`r=<nonce+server nonce>,s=<salt>,i=<iterations>`), then client-final
//! (`c=<binding>,r=<nonce>,p=<proof>`) → server-final (`v=<signature>`). The server keeps only
//! StoredKey and ServerKey per user (never the password). The primitives are RustCrypto's
//! (sha2, hmac, pbkdf2); comparisons of secrets are constant-time.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::credentials::{CredentialStore, ScramCredential};
use super::sasl::Step;

/// Fewest PBKDF2 iterations Kafka accepts for a SCRAM credential.
pub const ITERATIONS_MIN: i32 = 4096;
/// Most PBKDF2 iterations Kafka accepts for a SCRAM credential.
pub const ITERATIONS_MAX: i32 = 16384;
/// Random bytes in the server's nonce.
const SERVER_NONCE_BYTES: usize = 24;
/// Longest user name accepted in a client-first message (bytes).
const USER_NAME_BYTES_MAX: usize = 1024;

/// A SCRAM mechanism, with Kafka's wire type of it (AlterUserScramCredentials).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// The SASL name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// By SASL name.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// Kafka's type byte (1: SCRAM-SHA-256, 2: SCRAM-SHA-512).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// By Kafka's type byte.
    pub fn from_kafka_type(t: i8) -> Option<ScramMechanism> {
        match t {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// H(data).
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// HMAC(key, data).
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
        match self {
            ScramMechanism::Sha256 => match <Hmac<Sha256> as Mac>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            ScramMechanism::Sha512 => match <Hmac<Sha512> as Mac>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    /// Hi(password, salt, i): PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramMechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }

    /// The stored credential for a salted password (what AlterUserScramCredentials sends).
    pub fn credential(self, salted: &[u8], salt: &[u8], iterations: i32) -> ScramCredential {
        let client_key = self.hmac(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted, b"Server Key"),
            iterations,
        }
    }
}

/// Checks an upserted credential's parameters as Kafka does: the reason when unacceptable.
pub fn check_iterations(iterations: i32) -> Result<(), String> {
    if iterations < ITERATIONS_MIN {
        return Err(format!(
            "Too few iterations: {iterations} (at least {ITERATIONS_MIN})"
        ));
    }
    if iterations > ITERATIONS_MAX {
        return Err(format!(
            "Too many iterations: {iterations} (at most {ITERATIONS_MAX})"
        ));
    }
    Ok(())
}

/// What the server remembers between the two rounds.
struct Pending {
    user: String,
    credential: ScramCredential,
    /// The GS2 header of client-first (`n,,` or `n,a=<authzid>,`): client-final's `c=` is its
    /// base64.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// One connection's SCRAM exchange, server side.
pub struct ScramServer {
    mechanism: ScramMechanism,
    pending: Option<Pending>,
    done: bool,
}

/// The message clients are given for any credential failure (as Kafka's, it does not say
/// whether the user exists).
fn invalid_credentials(m: ScramMechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        m.name()
    )
}

/// `saslname` of RFC 5802: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn decode_sasl_name(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("Invalid SCRAM user name encoding".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn malformed(what: &str) -> String {
    format!("Invalid SCRAM {what}")
}

impl ScramServer {
    /// A new exchange for `mechanism`.
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        ScramServer {
            mechanism,
            pending: None,
            done: false,
        }
    }

    /// Takes the client's next message; the server's answer, or the reason it failed (then the
    /// exchange is over).
    pub fn step(&mut self, token: &[u8], store: &CredentialStore) -> Result<Step, String> {
        if self.done {
            return Err("SCRAM exchange already finished".into());
        }
        let text = std::str::from_utf8(token).map_err(|_| malformed("message: not UTF-8"))?;
        match self.pending.take() {
            None => self.client_first(text, store),
            Some(p) => {
                self.done = true;
                self.client_final(text, p)
            }
        }
    }

    fn client_first(&mut self, text: &str, store: &CredentialStore) -> Result<Step, String> {
        // gs2-header: "n," [ "a=" authzid ] ","   (no channel binding: Kafka's clients
        // never use it)
        let rest = text
            .strip_prefix("n,")
            .ok_or_else(|| malformed("client first message: channel binding not supported"))?;
        let (authz, bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed("client first message"))?;
        let authzid = match authz {
            "" => None,
            a => Some(decode_sasl_name(
                a.strip_prefix("a=")
                    .ok_or_else(|| malformed("client first message: authzid"))?,
            )?),
        };
        let gs2_header = format!("n,{authz},");
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or_else(|| malformed("client first message: no user name"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| malformed("client first message: no nonce"))?;
        if nonce.is_empty()
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(malformed("client first message: bad nonce"));
        }
        for ext in fields {
            let (k, _) = ext
                .split_once('=')
                .ok_or_else(|| malformed("client first message: extension"))?;
            if k == "tokenauth" {
                return Err("Delegation tokens are not supported".into());
            }
        }
        if user.len() > USER_NAME_BYTES_MAX {
            return Err(malformed("client first message: user name too long"));
        }
        let user = decode_sasl_name(user)?;
        if authzid.as_ref().is_some_and(|a| *a != user) {
            return Err(
                "Authentication failed: Client requested an authorization id that is different from username"
                    .into(),
            );
        }
        let credential = store
            .get(&user, self.mechanism)
            .ok_or_else(|| invalid_credentials(self.mechanism))?;
        let mut random = [0u8; SERVER_NONCE_BYTES];
        super::tls::random_bytes(&mut random)?;
        let nonce = format!("{nonce}{}", B64.encode(random));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.pending = Some(Pending {
            user,
            credential,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        });
        Ok(Step::Continue(server_first.into_bytes()))
    }

    fn client_final(&mut self, text: &str, p: Pending) -> Result<Step, String> {
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("client final message: no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or_else(|| malformed("client final message: no channel binding"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| malformed("client final message: no nonce"))?;
        if binding != B64.encode(p.gs2_header.as_bytes()) {
            return Err(malformed("client final message: channel binding mismatch"));
        }
        if nonce != p.nonce {
            return Err(malformed("client final message: nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| malformed("client final message: proof is not base64"))?;
        let m = self.mechanism;
        let auth_message = format!("{},{},{without_proof}", p.client_first_bare, p.server_first);
        let client_signature = m.hmac(&p.credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(invalid_credentials(m));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if !bool::from(m.hash(&client_key).ct_eq(&p.credential.stored_key)) {
            return Err(invalid_credentials(m));
        }
        let server_signature = m.hmac(&p.credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", B64.encode(server_signature));
        Ok(Step::Done {
            principal: p.user,
            response: server_final.into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, for the tests: RFC 5802 from the client's view.
    fn client_final(
        m: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").expect("nonce");
        let salt = B64
            .decode(fields[1].strip_prefix("s=").expect("salt"))
            .expect("b64");
        let iterations: u32 = fields[2].strip_prefix("i=").expect("i").parse().expect("n");
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = m.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = m.hmac(&salted, b"Server Key");
        let expect_v = m.hmac(&server_key, auth.as_bytes());
        (format!("{without_proof},p={}", B64.encode(proof)), expect_v)
    }

    fn store_with(m: ScramMechanism, user: &str, password: &str) -> CredentialStore {
        let store = CredentialStore::in_memory();
        let salt = b"0123456789abcdef";
        let salted = m.salted_password(password.as_bytes(), salt, 4096);
        store.put(user, m, m.credential(&salted, salt, 4096));
        store
    }

    #[test]
    fn full_exchange_succeeds_with_the_right_password_for_both_mechanisms() {
        for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let store = store_with(m, "alice", "pw");
            let mut s = ScramServer::new(m);
            let bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
            let Ok(Step::Continue(first)) = s.step(format!("n,,{bare}").as_bytes(), &store) else {
                panic!("first round");
            };
            let first = String::from_utf8(first).expect("utf8");
            let (fin, expect_v) = client_final(m, "pw", bare, &first);
            match s.step(fin.as_bytes(), &store) {
                Ok(Step::Done {
                    principal,
                    response,
                }) => {
                    assert_eq!(principal, "alice");
                    assert_eq!(response, format!("v={}", B64.encode(expect_v)).into_bytes());
                }
                other => panic!("{:?}", other.err()),
            }
            assert!(s.step(b"again", &store).is_err());
        }
    }

    #[test]
    fn wrong_password_unknown_user_and_malformed_messages_fail() {
        let m = ScramMechanism::Sha512;
        let store = store_with(m, "alice", "pw");
        let bare = "n=alice,r=abc";
        let mut s = ScramServer::new(m);
        let Ok(Step::Continue(first)) = s.step(format!("n,,{bare}").as_bytes(), &store) else {
            panic!("first round");
        };
        let (fin, _) = client_final(m, "wrong", bare, &String::from_utf8(first).expect("u"));
        let e = s.step(fin.as_bytes(), &store).expect_err("refused");
        assert!(e.contains("invalid credentials"), "{e}");

        let mut s = ScramServer::new(m);
        assert!(s.step(b"n,,n=bob,r=abc", &store).is_err());
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"p=tls-unique,,n=alice,r=abc",
            b"n,,n=alice",
            b"n,,r=abc,n=alice",
            b"n,,n=al=ice,r=abc",
            b"n,,n=alice,r=",
            b"n,,n=alice,r=abc,tokenauth=true",
            b"n,a=bob,n=alice,r=abc",
            b"n,,,,,,,,",
        ] {
            let mut s = ScramServer::new(m);
            assert!(s.step(bad, &store).is_err(), "{bad:?}");
        }
        // A malformed final message.
        for bad in [
            &b"c=biws,r=abc"[..],
            b"c=biws,r=wrongnonce,p=AAAA",
            b"c=xx,r=x,p=!!",
            b"",
        ] {
            let mut s = ScramServer::new(m);
            assert!(matches!(
                s.step(format!("n,,{bare}").as_bytes(), &store),
                Ok(Step::Continue(_))
            ));
            assert!(s.step(bad, &store).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sasl_names_and_iterations() {
        assert_eq!(decode_sasl_name("a=2Cb=3Dc").expect("ok"), "a,b=c");
        assert!(decode_sasl_name("a=").is_err());
        assert!(check_iterations(4095).is_err());
        assert!(check_iterations(4096).is_ok());
        assert!(check_iterations(16385).is_err());
        for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            assert_eq!(ScramMechanism::from_kafka_type(m.kafka_type()), Some(m));
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
        }
    }

    /// RFC 7677's test vector for SCRAM-SHA-256 (user "user", password "pencil").
    #[test]
    fn rfc7677_vector() {
        let m = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("b64");
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let store = CredentialStore::in_memory();
        store.put("user", m, m.credential(&salted, &salt, 4096));
        let cred = store.get("user", m).expect("stored");
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{bare},{server_first},{without_proof}");
        let sig = m.hmac(&cred.server_key, auth.as_bytes());
        assert_eq!(
            B64.encode(sig),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }
}
