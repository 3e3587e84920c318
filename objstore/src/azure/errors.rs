//! Mapping of Azure SDK errors to [`StoreError`], and scrubbing of secrets from messages.

use std::error::Error as _;

use azure_core::error::ErrorKind;

use crate::StoreError;

/// Status and storage error code of a failed request, if the service answered at all.
pub(super) fn status_and_code(e: &azure_core::Error) -> Option<(u16, Option<&str>)> {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => Some((u16::from(*status), error_code.as_deref())),
        _ => None,
    }
}

/// Whether the service answered with `status` (and, if given, storage error `code`).
pub(super) fn is(e: &azure_core::Error, status: u16, code: Option<&str>) -> bool {
    match status_and_code(e) {
        Some((s, c)) => s == status && (code.is_none() || c == code),
        None => false,
    }
}

/// Where a request went, for error messages.
pub(super) struct Target<'a> {
    /// The operation, e.g. `get`.
    pub op: &'a str,
    /// The object key relative to the store root (or a prefix for listings).
    pub key: &'a str,
    /// The container name.
    pub container: &'a str,
    /// The account name (may be empty when only an endpoint is known).
    pub account: &'a str,
}

/// Maps an SDK error without operation-specific meaning (conditional writes handle their
/// conflicts before calling this).
pub(super) fn map(t: &Target<'_>, e: &azure_core::Error) -> StoreError {
    let key = || t.key.to_owned();
    match status_and_code(e) {
        Some((404, Some("ContainerNotFound"))) => StoreError::Config(format!(
            "Azure container {:?} does not exist in account {:?} (create it first, e.g. with \
             AzureStore::create_container_if_missing)",
            t.container, t.account
        )),
        Some((404, _)) => StoreError::NotFound { key: key() },
        Some((409, Some("BlobAlreadyExists"))) => StoreError::AlreadyExists { key: key() },
        Some((412, _)) => StoreError::PreconditionFailed { key: key() },
        Some((416, _)) => StoreError::Invalid(format!(
            "range of {:?} is not satisfiable (starts at or past the end)",
            t.key
        )),
        Some((400, Some(code @ ("InvalidResourceName" | "OutOfRangeInput" | "InvalidUri")))) => {
            StoreError::Invalid(format!(
                "Azure rejected the key {:?} in {} ({code})",
                t.key, t.op
            ))
        }
        Some((status @ (401 | 403), code)) => StoreError::Config(format!(
            "Azure refused access to container {:?} of account {:?} (HTTP {status} {}): check \
             the account name and key, the SAS token's validity and permissions, or the \
             identity's role assignment (Storage Blob Data Contributor)",
            t.container,
            t.account,
            code.unwrap_or("no error code"),
        )),
        Some((status, code)) => StoreError::Backend(format!(
            "Azure {} of {:?} in container {:?} failed: HTTP {status} {}",
            t.op,
            t.key,
            t.container,
            code.unwrap_or("(no error code)"),
        )),
        None => match e.kind() {
            ErrorKind::Credential => StoreError::Config(format!(
                "cannot obtain an Entra ID token for account {:?}: {}",
                t.account,
                describe(e)
            )),
            _ => StoreError::Backend(format!(
                "Azure {} of {:?} in container {:?} failed (after retries): {}",
                t.op,
                t.key,
                t.container,
                describe(e)
            )),
        },
    }
}

/// The error with its chain of causes, with SAS signatures removed.
pub(super) fn describe(e: &azure_core::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // Wrappers often repeat their cause's message; skip exact repeats.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    crate::location::redact(&text)
}
