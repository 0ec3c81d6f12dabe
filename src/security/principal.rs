//! The principal of a TLS client certificate, as Kafka builds it: the certificate subject's
//! distinguished name in RFC 2253 form (what Java's `X500Principal.getName()` prints, e.g.
//! `CN=alice,OU=eng,O=example`), mapped by `ssl.principal.mapping.rules` to the user name of
//! `User:<name>`.
//!
//! The rules are Kafka's (`SslPrincipalMapper`): a comma-separated list of `DEFAULT` (the DN
//! as it is) and `RULE:pattern/replacement/` with an optional `L` or `U` after the last slash
//! (lower- or upper-case the result). The first rule whose pattern matches the whole DN gives
//! the name: every match of the pattern in the DN is replaced by the replacement, with Java's
//! replacement syntax (`$1`, `${name}`, `\` escapes; a `$n` above the pattern's group count is
//! literal text, as in Kafka). A DN no rule matches has no principal: the connection is
//! refused. Patterns are compiled by the `regex` crate, which has no look-around or
//! back-references; a pattern it cannot compile is refused at start, as Kafka refuses a rule
//! it cannot parse.

use regex::{Captures, Regex};

/// Kafka's default `ssl.principal.mapping.rules`.
pub const DEFAULT_SSL_PRINCIPAL_MAPPING_RULES: &str = "DEFAULT";

/// One rule, or its (pattern, replacement, case) parts: the grammar of Kafka's rule list.
const RULE_PATTERN: &str = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)";

#[derive(Debug)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug)]
enum Rule {
    Default,
    Replace {
        /// The pattern as searched for (every match is replaced).
        search: Regex,
        /// The pattern anchored at both ends: the rule applies when it matches the whole DN.
        whole: Regex,
        replacement: String,
        case: Case,
    },
}

/// `ssl.principal.mapping.rules`, parsed: maps a certificate's DN to a user name.
#[derive(Debug)]
pub struct SslPrincipalMapper {
    rules: Vec<Rule>,
}

impl SslPrincipalMapper {
    /// Parses a rule list. Refuses (with the offending rule in the message) a rule that is
    /// neither `DEFAULT` nor `RULE:pattern/replacement/[LU]`, text after a rule's last slash
    /// other than `L` or `U`, and a pattern that does not compile.
    pub fn parse(rules: &str) -> Result<SslPrincipalMapper, String> {
        let splitter = Regex::new(&format!(r"\s*({RULE_PATTERN})\s*(?:,\s*|$)"))
            .map_err(|e| format!("rule grammar: {e}"))?;
        let parser = Regex::new(&format!("^(?:{RULE_PATTERN})"))
            .map_err(|e| format!("rule grammar: {e}"))?;
        let mut out = Vec::new();
        for caps in splitter.captures_iter(rules.trim()) {
            let Some(rule) = caps.get(1).map(|m| m.as_str()) else {
                continue;
            };
            let Some(m) = parser.captures(rule) else {
                return Err(format!("Invalid rule: `{rule}`"));
            };
            let end = m.get(0).map_or(0, |g| g.end());
            if end != rule.len() {
                return Err(format!(
                    "Invalid rule: `{rule}`, unmatched substring: `{}`",
                    &rule[end..]
                ));
            }
            if m.get(1).is_some() {
                out.push(Rule::Default);
            } else if let (Some(pattern), Some(replacement)) = (m.get(2), m.get(3)) {
                let pattern = pattern.as_str();
                let search = Regex::new(pattern)
                    .map_err(|e| format!("Invalid rule: `{rule}`: pattern `{pattern}`: {e}"))?;
                let whole = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("Invalid rule: `{rule}`: pattern `{pattern}`: {e}"))?;
                let case = match m.get(4).map(|g| g.as_str()) {
                    Some("L") => Case::Lower,
                    Some("U") => Case::Upper,
                    _ => Case::Keep,
                };
                out.push(Rule::Replace {
                    search,
                    whole,
                    replacement: replacement.as_str().to_string(),
                    case,
                });
            }
            // Anything else is an empty rule (`a,,b` or trailing commas): ignored, as Kafka.
        }
        Ok(SslPrincipalMapper { rules: out })
    }

    /// The user name of `dn` by the first rule that applies; `Err` when none does (or a
    /// replacement names a group that does not exist), with the reason.
    pub fn name(&self, dn: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(dn.to_string()),
                Rule::Replace {
                    search,
                    whole,
                    replacement,
                    case,
                } => {
                    if !whole.is_match(dn) {
                        continue;
                    }
                    let name = replace_all(search, dn, replacement)?;
                    return Ok(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        Err(format!(
            "no ssl.principal.mapping.rules rule applies to `{dn}`"
        ))
    }
}

/// Every match of `re` in `text` replaced, as Java's `String.replaceAll`: the search goes on
/// from the end of a match, and one character further after an empty match.
fn replace_all(re: &Regex, text: &str, replacement: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let (mut from, mut copied) = (0usize, 0usize);
    while from <= text.len() {
        let Some(caps) = re.captures_at(text, from) else {
            break;
        };
        let Some(m) = caps.get(0) else { break };
        out.push_str(&text[copied..m.start()]);
        expand(re, &caps, replacement, &mut out)?;
        copied = m.end();
        from = if m.is_empty() {
            m.end() + text[m.end()..].chars().next().map_or(1, char::len_utf8)
        } else {
            m.end()
        };
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// Appends `replacement` with Java's syntax, and Kafka's rule that a `$n` whose first digit is
/// above the group count (of a pattern with groups) is literal. A group that took no part in
/// the match appends nothing.
fn expand(
    re: &Regex,
    caps: &Captures<'_>,
    replacement: &str,
    out: &mut String,
) -> Result<(), String> {
    let groups = caps.len() - 1;
    let mut chars = replacement.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => return Err("replacement ends with `\\`".into()),
            },
            '$' => match chars.peek().copied() {
                Some((brace, '{')) => {
                    let rest = &replacement[brace + 1..];
                    let Some(close) = rest.find('}') else {
                        return Err("replacement has `${` without `}`".into());
                    };
                    let name = &rest[..close];
                    if !re.capture_names().any(|n| n == Some(name)) {
                        return Err(format!(
                            "replacement names group `{name}`, which the pattern does not have"
                        ));
                    }
                    if let Some(g) = caps.name(name) {
                        out.push_str(g.as_str());
                    }
                    // Past `{name}`.
                    while chars.next().is_some_and(|(_, c)| c != '}') {}
                }
                Some((_, d)) if d.is_ascii_digit() => {
                    let first = d as usize - '0' as usize;
                    if groups > 0 && first > groups {
                        out.push('$'); // Kafka escapes it: literal text
                        continue;
                    }
                    chars.next();
                    let mut n = first;
                    while let Some(v) = chars.peek().and_then(|(_, d)| d.to_digit(10)) {
                        let next = n * 10 + v as usize;
                        if next > groups {
                            break;
                        }
                        n = next;
                        chars.next();
                    }
                    if n > groups {
                        return Err(format!(
                            "replacement refers to group {n}, which the pattern does not have"
                        ));
                    }
                    if let Some(g) = caps.get(n) {
                        out.push_str(g.as_str());
                    }
                }
                _ => return Err("replacement has `$` not followed by a group".into()),
            },
            c => out.push(c),
        }
    }
    Ok(())
}

/// The subject of a DER certificate as Kafka's principal builder sees it: RFC 2253 form, as
/// Java's `X500Principal.getName()` prints it. RDNs last-first, joined by `,` (the AVAs of a
/// multi-valued RDN by `+`); the attributes CN, C, L, ST, O, OU, STREET, DC and UID by name
/// with their string values escaped (`,=+<>#;"\` get a backslash, as do leading and trailing
/// spaces; NUL is `\00`); any other attribute as its dotted OID with `#` and the hex of the
/// value's DER encoding.
pub fn subject_dn(cert: &rustls::pki_types::CertificateDer<'_>) -> Result<String, String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    rdn_sequence_to_rfc2253(parsed.subject())
}

/// The subject alternative names of a DER certificate, each GeneralName's encoding, as a set
/// (Kafka compares them so when a keystore is reloaded); empty without the extension.
pub fn subject_alt_names(
    cert: &rustls::pki_types::CertificateDer<'_>,
) -> Result<std::collections::BTreeSet<Vec<u8>>, String> {
    let (certificate, _) = der_take(cert.as_ref(), Some(TAG_SEQUENCE))?;
    let (tbs, _) = der_take(certificate.content, Some(TAG_SEQUENCE))?;
    let mut rest = tbs.content;
    let mut names = std::collections::BTreeSet::new();
    while !rest.is_empty() {
        let (field, after) = der_take(rest, None)?;
        rest = after;
        // [3] EXPLICIT Extensions: SEQUENCE OF Extension { extnID, critical?, extnValue }.
        if field.tag != 0xa3 {
            continue;
        }
        let (list, _) = der_take(field.content, Some(TAG_SEQUENCE))?;
        let mut exts = list.content;
        while !exts.is_empty() {
            let (ext, after) = der_take(exts, Some(TAG_SEQUENCE))?;
            exts = after;
            let (oid, mut body) = der_take(ext.content, Some(TAG_OID))?;
            if oid_text(oid.content)? != "2.5.29.17" {
                continue;
            }
            if body.first() == Some(&0x01) {
                body = der_take(body, None)?.1; // critical
            }
            let (value, _) = der_take(body, Some(0x04))?;
            let (seq, _) = der_take(value.content, Some(TAG_SEQUENCE))?;
            let mut general = seq.content;
            while !general.is_empty() {
                let (name, after) = der_take(general, None)?;
                general = after;
                names.insert(name.whole.to_vec());
            }
        }
    }
    Ok(names)
}

/// RFC 2253 text of a Name's RDNSequence contents (without the outer SEQUENCE header).
fn rdn_sequence_to_rfc2253(mut rdns: &[u8]) -> Result<String, String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (set, rest) = der_take(rdns, Some(TAG_SET))?;
        rdns = rest;
        let mut avas = Vec::new();
        let mut inner = set.content;
        while !inner.is_empty() {
            let (ava, rest) = der_take(inner, Some(TAG_SEQUENCE))?;
            inner = rest;
            let (oid, rest) = der_take(ava.content, Some(TAG_OID))?;
            let (value, rest) = der_take(rest, None)?;
            if !rest.is_empty() {
                return Err("subject: trailing bytes in an attribute".into());
            }
            avas.push(ava_to_rfc2253(&oid_text(oid.content)?, &value)?);
        }
        if avas.is_empty() {
            return Err("subject: an empty RDN".into());
        }
        parts.push(avas.join("+"));
    }
    parts.reverse();
    Ok(parts.join(","))
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;

/// One DER element: its tag, its contents, and its whole encoding.
struct Der<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Splits the first DER element off `input` (checking its tag when `want` is given).
fn der_take(input: &[u8], want: Option<u8>) -> Result<(Der<'_>, &[u8]), String> {
    let short = || "subject: truncated DER".to_string();
    let (&tag, after) = input.split_first().ok_or_else(short)?;
    if tag & 0x1f == 0x1f {
        return Err("subject: multi-byte DER tag".into());
    }
    if want.is_some_and(|w| w != tag) {
        return Err(format!(
            "subject: DER tag {tag:#04x} where {want:?} was expected"
        ));
    }
    let (&first, after) = after.split_first().ok_or_else(short)?;
    let (len, after) = if first < 0x80 {
        (first as usize, after)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || after.len() < n {
            return Err("subject: bad DER length".into());
        }
        let len = after[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &after[n..])
    };
    if after.len() < len {
        return Err(short());
    }
    let header = input.len() - after.len();
    Ok((
        Der {
            tag,
            content: &after[..len],
            whole: &input[..header + len],
        },
        &after[len..],
    ))
}

/// Dotted text of an OID's contents.
fn oid_text(bytes: &[u8]) -> Result<String, String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if v > (u64::MAX >> 7) {
            return Err("subject: OID arc too large".into());
        }
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        } else if i + 1 == bytes.len() {
            return Err("subject: truncated OID".into());
        }
    }
    if arcs.is_empty() {
        return Err("subject: empty OID".into());
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// The attribute names RFC 2253 output uses (Java's list); others print as dotted OIDs.
const RFC2253_KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

fn ava_to_rfc2253(oid: &str, value: &Der<'_>) -> Result<String, String> {
    let keyword = RFC2253_KEYWORDS
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, k)| *k);
    let text = match keyword {
        Some(_) => directory_string(value)?,
        None => None,
    };
    let (Some(keyword), Some(text)) = (keyword, text) else {
        let hex: String = value.whole.iter().map(|b| format!("{b:02x}")).collect();
        return Ok(format!("{oid}=#{hex}"));
    };
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\0' => escaped.push_str("\\00"),
            c => escaped.push(c),
        }
    }
    // Leading and trailing blanks (space, CR) are escaped too.
    let chars: Vec<char> = escaped.chars().collect();
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = chars.iter().take_while(|c| blank(c)).count();
    let trail = chars.len() - chars.iter().rev().take_while(|c| blank(c)).count();
    let mut out = format!("{keyword}=");
    for (i, c) in chars.iter().enumerate() {
        if i < lead || i >= trail {
            out.push('\\');
        }
        out.push(*c);
    }
    Ok(out)
}

/// The text of a DirectoryString-like value; `None` for a type without a string form.
fn directory_string(value: &Der<'_>) -> Result<Option<String>, String> {
    let c = value.content;
    let bad = |what: &str| format!("subject: invalid {what} value");
    Ok(Some(match value.tag {
        // UTF8String, PrintableString, IA5String
        0x0c | 0x13 | 0x16 => String::from_utf8(c.to_vec()).map_err(|_| bad("string"))?,
        // T61String, GeneralString: one byte per character (ISO 8859-1), as Java reads them.
        0x14 | 0x1b => c.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE.
        0x1e => {
            if c.len() % 2 != 0 {
                return Err(bad("BMPString"));
            }
            let units: Vec<u16> = c
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16(&units).map_err(|_| bad("BMPString"))?
        }
        // UniversalString: UTF-32BE.
        0x1c => {
            if c.len() % 4 != 0 {
                return Err(bad("UniversalString"));
            }
            c.chunks_exact(4)
                .map(|p| char::from_u32(u32::from_be_bytes([p[0], p[1], p[2], p[3]])))
                .collect::<Option<String>>()
                .ok_or_else(|| bad("UniversalString"))?
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rules: &str, dn: &str) -> Result<String, String> {
        SslPrincipalMapper::parse(rules)?.name(dn)
    }

    #[test]
    fn kafka_mapper_examples() {
        // Kafka's SslPrincipalMapperTest.
        let rules = "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, \
                     RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, \
                     RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U, \
                     RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, \
                     DEFAULT";
        let m = SslPrincipalMapper::parse(rules).expect("parse");
        for (dn, name) in [
            ("CN=Duke,OU=ServiceUsers,O=Org,C=US", "duke"),
            ("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US", "duke@sme"),
            ("cn=duke,ou=sme,dc=mycp,dc=com", "DUKE@SME"),
            ("cN=duke,OU=JavaSoft,O=Sun Microsystems", "DUKE"),
            (
                "OU=JavaSoft,O=Sun Microsystems,C=US",
                "OU=JavaSoft,O=Sun Microsystems,C=US",
            ),
        ] {
            assert_eq!(m.name(dn).as_deref(), Ok(name), "{dn}");
        }
        // An escaped comma inside a CN.
        assert_eq!(
            map(
                r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT",
                r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz"
            )
            .as_deref(),
            Ok(r"Tkac\, Adam")
        );
        for valid in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
            "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
        ] {
            assert!(SslPrincipalMapper::parse(valid).is_ok(), "{valid}");
        }
        for invalid in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
        ] {
            assert!(SslPrincipalMapper::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn replacement_syntax() {
        assert_eq!(
            map("RULE:^CN=(.*?),OU=(.*?)$/$1/U", "CN=duke,OU=x").as_deref(),
            Ok("DUKE")
        );
        // Escaped slashes in pattern and replacement.
        assert_eq!(
            map(r"RULE:^CN=([^,\/]*)\/(.*)$/$1\/$2/", "CN=a/b").as_deref(),
            Ok("a/b")
        );
        // A `$n` above the group count is literal; `$12` with one group is `$1` then `2`.
        assert_eq!(map("RULE:^CN=(.*)$/$1-$4/", "CN=x").as_deref(), Ok("x-$4"));
        assert_eq!(map("RULE:^CN=(.*)$/$12/", "CN=x").as_deref(), Ok("x2"));
        assert_eq!(
            map("RULE:^CN=(?P<who>.*)$/${who}!/", "CN=x").as_deref(),
            Ok("x!")
        );
        // Every match is replaced, as Java's replaceAll (an empty match at the end too).
        assert_eq!(map("RULE:(.*)/x$1/", "abc").as_deref(), Ok("xabcx"));
        // Java refuses these replacements when they are applied.
        assert!(map("RULE:^CN=.*$/$1/", "CN=x").is_err());
        assert!(map("RULE:^CN=(.*)$/$x/", "CN=x").is_err());
    }

    #[test]
    fn no_rule_applies() {
        let e = map("RULE:^CN=(.*),O=a$/$1/", "CN=x,O=b").expect_err("no match");
        assert!(e.contains("CN=x,O=b"), "{e}");
        assert!(map("", "CN=x").is_err());
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        for (rules, part) in [
            ("RULE:^CN=(.*)$/$1/X", "unmatched substring: `X`"),
            ("RULE:^CN=(.*)$/$1/LL", "unmatched substring: `L`"),
            ("RULE:^CN=(.*)$/$1", "Invalid rule: `RULE:^CN=(.*)$/$1`"),
            ("DEFAULT,SOMETHING", "Invalid rule: `SOMETHING`"),
            ("RULE:^CN=((.*)$/$1/", "pattern `^CN=((.*)$`"),
            ("RULE:^CN=(?=x)$/$1/", "pattern"),
        ] {
            let e = SslPrincipalMapper::parse(rules).expect_err(rules);
            assert!(e.contains(part), "{rules}: {e}");
        }
        // Empty entries are ignored.
        assert_eq!(map(" DEFAULT , ,", "CN=x").as_deref(), Ok("CN=x"));
    }

    /// DER of an AVA sequence element.
    fn ava(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut v = vec![0x06, oid.len() as u8];
        v.extend_from_slice(oid);
        v.push(tag);
        v.push(value.len() as u8);
        v.extend_from_slice(value);
        let mut s = vec![0x30, v.len() as u8];
        s.extend(v);
        s
    }

    fn rdn(avas: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = avas.concat();
        let mut s = vec![0x31, body.len() as u8];
        s.extend(body);
        s
    }

    #[test]
    fn subject_in_rfc2253_form() {
        const C: &[u8] = &[0x55, 4, 6];
        const O: &[u8] = &[0x55, 4, 10];
        const OU: &[u8] = &[0x55, 4, 11];
        const CN: &[u8] = &[0x55, 4, 3];
        const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
        let name = [
            rdn(&[ava(C, 0x13, b"US")]),
            rdn(&[ava(O, 0x0c, b"Acme, Inc.")]),
            rdn(&[ava(OU, 0x0c, b"a"), ava(OU, 0x0c, b"b")]),
            rdn(&[ava(CN, 0x0c, b" #x=y+z<>;\"\\ ")]),
            rdn(&[ava(EMAIL, 0x16, b"a@b")]),
        ]
        .concat();
        assert_eq!(
            rdn_sequence_to_rfc2253(&name).expect("dn"),
            r#"1.2.840.113549.1.9.1=#1603614062,CN=\ \#x\=y\+z\<\>\;\"\\\ ,OU=a+OU=b,O=Acme\, Inc.,C=US"#
        );
        // Truncated input is an error, not a panic.
        for cut in 0..name.len() {
            let _ = rdn_sequence_to_rfc2253(&name[..cut]);
        }
    }
}
