//! Parsing of remote store locations, `scheme://container/prefix?option=value&...`,
//! shared by the bucket backends so that every scheme reads options the same way.

use crate::{Result, StoreError};

/// A remote location split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Bucket or container name.
    pub container: String,
    /// Key prefix without leading or trailing `/`; empty for the container's root.
    pub prefix: String,
    /// Query options in the order given, percent-decoded.
    pub options: Vec<(String, String)>,
}

impl Location {
    /// Parses `url`, which must use `scheme` (any case).
    pub fn parse(url: &str, scheme: &str) -> Result<Self> {
        let shown = redact(url);
        let config = |what: &str| StoreError::Config(format!("store location {shown:?}: {what}"));
        let rest = url
            .split_once("://")
            .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
            .map(|(_, rest)| rest)
            .ok_or_else(|| config(&format!("expected {scheme}://container/prefix")))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if path.contains('#') {
            return Err(config("fragments are not supported"));
        }
        let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
        if container.is_empty() {
            return Err(config("the bucket or container name is missing"));
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.starts_with('/') || prefix.contains("//") {
            return Err(config("the key prefix has empty path components"));
        }
        let mut options = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name).ok_or_else(|| config("bad percent-escape"))?;
            let value = percent_decode(value).ok_or_else(|| config("bad percent-escape"))?;
            if options.iter().any(|(n, _)| n == &name) {
                return Err(config(&format!("option {name} given twice")));
            }
            options.push((name, value));
        }
        Ok(Location {
            container: container.to_owned(),
            prefix: prefix.to_owned(),
            options,
        })
    }
}

/// Decodes `%XX` escapes (and `+` as a space, as in form-encoded queries).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Replaces the value of every `sig=` parameter, since transport errors quote the full
/// request URL and the signature is the secret part of a SAS.
pub(crate) fn redact(text: &str) -> String {
    const NEEDLE: &str = "sig=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(NEEDLE) {
        let value_start = i + NEEDLE.len();
        out.push_str(&rest[..value_start]);
        out.push_str("REDACTED");
        let value = &rest[value_start..];
        let end = value
            .find(|c: char| c == '&' || c == '#' || c == ')' || c == '"' || c.is_whitespace())
            .unwrap_or(value.len());
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A byte size with an optional binary suffix: `8388608`, `8MiB`, `64KiB`, `1GiB`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_container_prefix_and_options() {
        let loc = Location::parse(
            "s3://bkt/a/b/?endpoint=http://127.0.0.1:9000&region=eu-west-1&x=a%20b",
            "s3",
        )
        .expect("parse");
        assert_eq!(loc.container, "bkt");
        assert_eq!(loc.prefix, "a/b");
        assert_eq!(
            loc.options,
            vec![
                ("endpoint".into(), "http://127.0.0.1:9000".into()),
                ("region".into(), "eu-west-1".into()),
                ("x".into(), "a b".into()),
            ]
        );
        let root = Location::parse("AZ://c", "az").expect("root");
        assert_eq!((root.container.as_str(), root.prefix.as_str()), ("c", ""));
    }

    #[test]
    fn rejects_malformed_locations() {
        for bad in [
            "s3://",
            "s3:///prefix",
            "az://c/p",
            "s3://b//p",
            "s3://b/p#frag",
            "s3://b?x=%zz",
            "s3://b?a=1&a=2",
        ] {
            assert!(
                matches!(Location::parse(bad, "s3"), Err(StoreError::Config(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn redacts_signatures() {
        assert_eq!(
            redact("error sending request for url (http://h/c/k?sv=1&sig=abc%2B%3D&se=2) x"),
            "error sending request for url (http://h/c/k?sv=1&sig=REDACTED&se=2) x"
        );
        assert_eq!(redact("a sig=xyz"), "a sig=REDACTED");
        assert_eq!(redact("no secrets"), "no secrets");
    }

    #[test]
    fn sizes_and_bools() {
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("5242880"), Some(5 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("no"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
