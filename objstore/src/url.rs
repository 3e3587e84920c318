//! Opening a store from a location string, as given in configuration or on the CLI.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{DynStore, LocalStore, MemoryStore, Result, StoreError};

/// Opens the store named by `url`.
///
/// Accepted forms: `file:///absolute/path`, a plain filesystem path (no scheme),
/// `memory:` (a fresh, empty in-memory store), `s3://bucket/prefix?options` (see
/// [`crate::S3Config::from_url`]) and `az://container/prefix?options` (see
/// [`crate::azure::AzureStore::from_url`]). Remote stores contact nothing until their
/// first operation.
pub fn open_store(url: &str) -> Result<DynStore> {
    // A SAS token pasted into a location must not reach logs through an error message.
    open(url.trim()).map_err(|e| match e {
        StoreError::Config(msg) => StoreError::Config(crate::location::redact(&msg)),
        other => other,
    })
}

fn open(url: &str) -> Result<DynStore> {
    if url.is_empty() {
        return Err(StoreError::Config("empty store location".into()));
    }
    let Some((scheme, rest)) = split_scheme(url) else {
        return Ok(Arc::new(LocalStore::open(PathBuf::from(url))?));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => Ok(Arc::new(LocalStore::open(file_url_path(url, rest)?)?)),
        "memory" => {
            if !rest.is_empty() && rest != "//" {
                return Err(StoreError::Config(format!(
                    "store location {url:?}: `memory:` takes no path"
                )));
            }
            Ok(Arc::new(MemoryStore::new()))
        }
        #[cfg(feature = "s3")]
        "s3" => Ok(Arc::new(crate::S3Store::from_url(url)?)),
        #[cfg(feature = "azure")]
        "az" => Ok(Arc::new(crate::azure::AzureStore::from_url(url)?)),
        #[cfg(not(feature = "s3"))]
        "s3" => Err(no_backend(url, scheme)),
        #[cfg(not(feature = "azure"))]
        "az" => Err(no_backend(url, scheme)),
        _ => Err(StoreError::Config(format!(
            "store location {url:?}: unknown scheme `{scheme}` (expected file://, s3://, \
             az://, memory: or a path)"
        ))),
    }
}

#[cfg(not(all(feature = "s3", feature = "azure")))]
fn no_backend(url: &str, scheme: &str) -> StoreError {
    StoreError::Config(format!(
        "store location {url:?}: this build of tidemark has no `{scheme}` backend"
    ))
}

/// Splits `scheme:rest` when `url` has a URL scheme. A scheme is recognised only when
/// followed by `//` or when it is `memory`, so that a relative path containing a colon
/// (`backups:old`) is still taken as a path.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if well_formed && (rest.starts_with("//") || scheme.eq_ignore_ascii_case("memory")) {
        Some((scheme, rest))
    } else {
        None
    }
}

/// The path of a `file://` URL; only the empty host form (`file:///abs`) is accepted.
fn file_url_path(url: &str, rest: &str) -> Result<PathBuf> {
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.strip_prefix("localhost").unwrap_or(path);
    if !path.starts_with('/') {
        return Err(StoreError::Config(format!(
            "store location {url:?}: a file URL needs an absolute path (file:///dir)"
        )));
    }
    if path.contains('%') || path.contains('?') || path.contains('#') {
        return Err(StoreError::Config(format!(
            "store location {url:?}: percent-escapes, queries and fragments are not \
             supported in file URLs; give a plain path instead"
        )));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_err(url: &str) -> String {
        match open_store(url) {
            Err(StoreError::Config(msg)) => msg,
            other => panic!("{url:?}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn schemes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a");
        open_store(&format!("file://{}", p.display())).expect("file URL");
        assert!(p.join(".tmp").is_dir());
        let q = dir.path().join("b");
        open_store(q.to_str().expect("utf-8 path")).expect("plain path");
        assert!(q.join(".locks").is_dir());
        open_store("memory:").expect("memory");
        open_store("s3://bucket/prefix?endpoint=http://127.0.0.1:1").expect("s3 URL");
        assert!(config_err("s3://Bad_Bucket/x").contains("bucket name"));
        assert!(config_err("s3://bucket?part_size=1MiB").contains("5 MiB"));
        assert!(config_err("s3://bucket?colour=red").contains("unknown option"));
        assert!(config_err("s3://bucket?max_attempts=0").contains("at least 1"));
        assert!(config_err("az://container?colour=red").contains("unknown option"));
        assert!(config_err("az:///prefix").contains("container name is missing"));
        let leaked = config_err("az://c?endpoint=https://a.blob.core.windows.net/?sv=1&sig=SECRET");
        assert!(!leaked.contains("SECRET"), "{leaked}");
        assert!(config_err("ftp://x").contains("unknown scheme"));
        assert!(config_err("file://host/x").contains("absolute"));
        assert!(config_err("file://relative").contains("absolute"));
        assert!(config_err("memory:foo").contains("no path"));
        config_err("");
    }

    #[test]
    fn scheme_detection() {
        assert_eq!(split_scheme("s3://b"), Some(("s3", "//b")));
        assert_eq!(split_scheme("memory:"), Some(("memory", "")));
        assert_eq!(split_scheme("backups:old"), None);
        assert_eq!(split_scheme("/abs/path"), None);
        assert_eq!(split_scheme("./rel:x"), None);
    }
}
