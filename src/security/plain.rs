//! SASL/PLAIN (RFC 4616): users from Kafka's JAAS property, token checking.
//!
//! The users come from `listener.name.<l>.plain.sasl.jaas.config`, Kafka's form:
//! `org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="pw";`
//! (`username`/`password` there are the broker's own inter-broker credentials and are not
//! users). Passwords are compared in constant time.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

/// Kafka's login module class for PLAIN.
pub const PLAIN_LOGIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";

/// Parses a JAAS configuration entry: `<class> <flag> key="value" ...;` into the class name
/// and its options. Values are double-quoted (with `\"` and `\\` escapes) or bare words.
pub fn parse_jaas(text: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let text = text.trim();
    let text = text
        .strip_suffix(';')
        .ok_or_else(|| "a JAAS entry ends with `;`".to_string())?;
    let mut rest = text.trim_start();
    let mut word = || -> Option<String> {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let w = rest[..end].to_string();
        rest = rest[end..].trim_start();
        (!w.is_empty()).then_some(w)
    };
    let class = word().ok_or_else(|| "no login module class".to_string())?;
    let flag = word().ok_or_else(|| "no control flag (required)".to_string())?;
    if !["required", "requisite", "sufficient", "optional"].contains(&flag.as_str()) {
        return Err(format!("`{flag}` is not a JAAS control flag"));
    }
    let mut options = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let key = key.trim().to_string();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("bad option name `{key}`"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().ok_or("unfinished escape")?),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("option `{key}`: unterminated quote"));
            }
        } else {
            while let Some(c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        options.insert(key, value);
    }
    Ok((class, options))
}

/// The PLAIN users of one listener, by name.
#[derive(Clone, Debug, Default)]
pub struct PlainUsers {
    users: BTreeMap<String, String>,
}

impl PlainUsers {
    /// The `user_<name>="<password>"` options of a PlainLoginModule JAAS entry.
    pub fn from_jaas(text: &str) -> Result<PlainUsers, String> {
        let (class, options) = parse_jaas(text)?;
        if class != PLAIN_LOGIN_MODULE {
            return Err(format!(
                "login module `{class}` is not {PLAIN_LOGIN_MODULE}"
            ));
        }
        let users = options
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("user_").map(|u| (u.to_string(), v)))
            .collect();
        Ok(PlainUsers { users })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a PLAIN token (`authzid NUL authcid NUL password`): the user's name, or why not
    /// (the same message for an unknown user and a wrong password, as Kafka's).
    pub fn authenticate(&self, token: &[u8]) -> Result<String, String> {
        let mut parts = token.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("Invalid SASL/PLAIN response: expected 3 tokens".into());
        };
        let user = std::str::from_utf8(user)
            .map_err(|_| "Invalid SASL/PLAIN response: username is not UTF-8".to_string())?;
        if user.is_empty() {
            return Err("Authentication failed: username not specified".into());
        }
        if password.is_empty() {
            return Err("Authentication failed: password not specified".into());
        }
        if !authzid.is_empty() && authzid != user.as_bytes() {
            return Err(
                "Authentication failed: Client requested an authorization id that is different from username"
                    .into(),
            );
        }
        let ok = self
            .users
            .get(user)
            .is_some_and(|expected| bool::from(expected.as_bytes().ct_eq(password)));
        if ok {
            Ok(user.to_string())
        } else {
            Err("Authentication failed: Invalid username or password".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="al\"ice pw";"#;

    #[test]
    fn users_come_from_user_options_only() {
        let u = PlainUsers::from_jaas(JAAS).expect("parses");
        assert_eq!(u.len(), 2);
        assert_eq!(u.authenticate(b"\0alice\0al\"ice pw"), Ok("alice".into()));
        assert_eq!(
            u.authenticate(b"alice\0alice\0al\"ice pw"),
            Ok("alice".into())
        );
        assert!(u.authenticate(b"\0alice\0wrong").is_err());
        assert!(u.authenticate(b"\0nobody\0x").is_err());
        assert!(u.authenticate(b"bob\0alice\0al\"ice pw").is_err());
        assert!(u.authenticate(b"\0alice").is_err());
        assert!(u.authenticate(b"\0alice\0pw\0extra").is_err());
        assert!(u.authenticate(b"\0\0pw").is_err());
        assert!(u.authenticate(b"").is_err());
    }

    #[test]
    fn bad_jaas_is_refused() {
        assert!(PlainUsers::from_jaas("org.x.Other required user_a=\"b\";").is_err());
        assert!(PlainUsers::from_jaas(&JAAS[..JAAS.len() - 1]).is_err());
        assert!(PlainUsers::from_jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule maybe;"
        )
        .is_err());
        assert!(parse_jaas("a required k=\"unterminated;").is_err());
        let (_, o) = parse_jaas("a required k=v x=\"y z\";").expect("ok");
        assert_eq!(o["k"], "v");
        assert_eq!(o["x"], "y z");
    }
}
