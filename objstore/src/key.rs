//! Key and prefix validation shared by every backend, so that a key accepted by one
//! backend is accepted by all of them and can never escape the store's root.

use crate::{Result, StoreError};

/// Longest accepted key, in bytes (S3 and Azure both allow at least this much).
pub const MAX_KEY_LEN: usize = 1024;

/// Checks that `key` is an acceptable object key; returns `StoreError::Invalid` otherwise.
///
/// A key is a relative `/`-separated path of at most [`MAX_KEY_LEN`] bytes whose
/// components are non-empty, are not `.` or `..`, do not start with `.` (reserved for
/// the local backend's internals) and contain no control character or backslash.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(key, "key is empty"));
    }
    check_common(key)?;
    for component in key.split('/') {
        check_component(key, component)?;
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a key prefix whose complete components (all but
/// the text after the last `/`) follow the key rules.
///
/// The trailing partial component only has to be free of control characters and
/// backslashes: it is matched against names, never turned into a path.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_common(prefix)?;
    let (complete, _partial) = split_prefix(prefix);
    if let Some(dir) = complete {
        for component in dir.split('/') {
            check_component(prefix, component)?;
        }
    }
    Ok(())
}

/// Splits a prefix into its complete components (without the trailing `/`) and the
/// partial last name: `a/b/c` → (`Some("a/b")`, `c`), `a/` → (`Some("a")`, ``),
/// `ab` → (`None`, `ab`).
pub(crate) fn split_prefix(prefix: &str) -> (Option<&str>, &str) {
    match prefix.rfind('/') {
        Some(i) => (Some(&prefix[..i]), &prefix[i + 1..]),
        None => (None, prefix),
    }
}

fn check_common(s: &str) -> Result<()> {
    if s.len() > MAX_KEY_LEN {
        return Err(invalid(
            s,
            &format!("longer than {MAX_KEY_LEN} bytes ({} bytes)", s.len()),
        ));
    }
    if s.starts_with('/') {
        return Err(invalid(s, "must be relative (starts with '/')"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(invalid(
            s,
            &format!("contains control character U+{:04X}", u32::from(c)),
        ));
    }
    if s.contains('\\') {
        return Err(invalid(s, "contains a backslash"));
    }
    Ok(())
}

fn check_component(whole: &str, component: &str) -> Result<()> {
    if component.is_empty() {
        return Err(invalid(
            whole,
            "has an empty path component ('//' or trailing '/')",
        ));
    }
    if component == "." || component == ".." {
        return Err(invalid(whole, "has a '.' or '..' path component"));
    }
    if component.starts_with('.') {
        return Err(invalid(
            whole,
            &format!("component {component:?} starts with '.', which is reserved"),
        ));
    }
    Ok(())
}

fn invalid(key: &str, why: &str) -> StoreError {
    // Debug-format the key so control characters and long keys stay readable in logs.
    let shown: String = if key.len() > 120 {
        let mut end = 120;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}…", &key[..end])
    } else {
        format!("{key:?}")
    };
    StoreError::Invalid(format!("key {shown}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in [
            "a",
            "a/b/c",
            "domains/d1/log/0000000000000001.seg",
            "x.y",
            "a/b.c/d..e",
            "ünïcode/ключ",
            "a b/c-d_e",
        ] {
            validate_key(k).unwrap_or_else(|e| panic!("{k:?} rejected: {e}"));
        }
        validate_key(&"x".repeat(MAX_KEY_LEN)).expect("longest key");
    }

    #[test]
    fn rejects_bad_keys() {
        let long = "x".repeat(MAX_KEY_LEN + 1);
        for k in [
            "",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "../x",
            "a/..",
            ".tmp/x",
            "a/.locks",
            "a/.hidden",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\u{7f}b",
            long.as_str(),
        ] {
            match validate_key(k) {
                Err(StoreError::Invalid(msg)) => assert!(msg.contains("key"), "{msg}"),
                other => panic!("{k:?} not rejected: {other:?}"),
            }
        }
    }

    #[test]
    fn prefixes() {
        for p in ["", "a", "a/", "a/b", "log/00", "a/b/", "a/.", "a/.."] {
            validate_prefix(p).unwrap_or_else(|e| panic!("{p:?} rejected: {e}"));
        }
        for p in [
            "/", "/a", "a//", "a//b", "../", "../a", ".tmp/", "a\\", "a\0", "./x",
        ] {
            assert!(
                matches!(validate_prefix(p), Err(StoreError::Invalid(_))),
                "{p:?} accepted"
            );
        }
    }

    #[test]
    fn split() {
        assert_eq!(split_prefix("a/b/c"), (Some("a/b"), "c"));
        assert_eq!(split_prefix("a/"), (Some("a"), ""));
        assert_eq!(split_prefix("ab"), (None, "ab"));
        assert_eq!(split_prefix(""), (None, ""));
    }
}
