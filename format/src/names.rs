//! Rules for the names users give to domains, disks and markers. Names become parts
//! of object keys and index keys, so they are restricted to a safe alphabet.

use crate::{FormatError, Result};

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a domain, disk or marker name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting
/// with `.` or `-`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(FormatError::Invalid(format!(
            "{kind} name {name:?}: must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    if !name.chars().all(ok_char) || name.starts_with('.') || name.starts_with('-') {
        return Err(FormatError::Invalid(format!(
            "{kind} name {name:?}: only letters, digits, '.', '_' and '-' are allowed, not first '.' or '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("domain", "web-01_a.b").is_ok());
        for bad in ["", ".x", "-x", "a/b", "a b", "ä", &"x".repeat(65), ".."] {
            assert!(validate_name("domain", bad).is_err(), "{bad:?}");
        }
    }
}
