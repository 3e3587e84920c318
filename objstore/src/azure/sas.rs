//! Account SAS tokens signed with the storage account key.
//!
//! `azure_storage_blob` has no shared-key policy, but it accepts any request that carries a
//! SAS token. So with an account key we sign an account SAS ourselves, following
//! Microsoft's "Create an account SAS" for signed versions 2020-12-06 and later, and keep
//! a fresh one in a cache: a token is valid for a day and replaced after half of that, so
//! a long-running service never sends one that is about to expire.

use std::fmt;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signed version (`sv`). Any version from 2020-12-06 on uses the string-to-sign below
/// (with the encryption-scope line); this one is accepted by Azure and Azurite alike.
pub(crate) const SAS_VERSION: &str = "2022-11-02";
/// Signed services (`ss`): blob only.
const SERVICES: &str = "b";
/// Signed resource types (`srt`): service, container and object.
const RESOURCE_TYPES: &str = "sco";
/// Signed permissions (`sp`), in the canonical order the service expects: read, write,
/// delete, list, add, create.
const PERMISSIONS: &str = "rwdlac";

/// How long a token is valid.
const VALIDITY: Duration = Duration::hours(24);
/// After how long a cached token is replaced.
const RENEW_AFTER: Duration = Duration::hours(12);
/// Start times are backdated so that a server whose clock is behind ours still accepts
/// a brand-new token.
const CLOCK_SKEW: Duration = Duration::minutes(15);

/// Signs account SAS tokens; holds the decoded account key.
pub(crate) struct AccountSasSigner {
    account: String,
    key: Vec<u8>,
    protocol: &'static str,
}

impl fmt::Debug for AccountSasSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSasSigner")
            .field("account", &self.account)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl AccountSasSigner {
    /// A signer for `account` with its base64 `key`; `allow_http` widens the signed
    /// protocol to `https,http` (needed for an `http://` endpoint such as Azurite).
    pub(crate) fn new(account: &str, key_base64: &str, allow_http: bool) -> Result<Self, String> {
        if account.is_empty() {
            return Err("an account key needs the account name to sign with".into());
        }
        let key = BASE64
            .decode(key_base64.trim())
            .map_err(|_| "the account key is not valid base64".to_owned())?;
        if key.is_empty() {
            return Err("the account key is empty".into());
        }
        Ok(Self {
            account: account.to_owned(),
            key,
            protocol: if allow_http { "https,http" } else { "https" },
        })
    }

    /// The string-to-sign for a token valid from `start` to `expiry` (both already in
    /// the `YYYY-MM-DDThh:mm:ssZ` form that goes into the token).
    fn string_to_sign(&self, start: &str, expiry: &str) -> String {
        // accountname, sp, ss, srt, st, se, sip, spr, sv, ses, and a final empty line.
        [
            self.account.as_str(),
            PERMISSIONS,
            SERVICES,
            RESOURCE_TYPES,
            start,
            expiry,
            "",
            self.protocol,
            SAS_VERSION,
            "",
            "",
        ]
        .join("\n")
    }

    fn signature(&self, string_to_sign: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail for a non-empty key.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        };
        mac.update(string_to_sign.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }

    /// A token (query string without `?`) valid from `start` to `expiry`.
    pub(crate) fn token(&self, start: DateTime<Utc>, expiry: DateTime<Utc>) -> String {
        let st = sas_time(start);
        let se = sas_time(expiry);
        let sig = self.signature(&self.string_to_sign(&st, &se));
        let pairs = [
            ("sv", SAS_VERSION),
            ("ss", SERVICES),
            ("srt", RESOURCE_TYPES),
            ("sp", PERMISSIONS),
            ("st", st.as_str()),
            ("se", se.as_str()),
            ("spr", self.protocol),
            ("sig", sig.as_str()),
        ];
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// ISO 8601 in UTC to the second, the form the SAS documentation uses.
fn sas_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that `+`, `/` and
/// `=` of the base64 signature and the `:` of times survive as literal characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A signer plus the token it last produced, renewed when it gets old.
#[derive(Debug)]
pub(crate) struct RenewingSas {
    signer: AccountSasSigner,
    cached: Mutex<Option<(String, DateTime<Utc>)>>,
}

impl RenewingSas {
    /// Wraps `signer`; the first token is signed on first use.
    pub(crate) fn new(signer: AccountSasSigner) -> Self {
        Self {
            signer,
            cached: Mutex::new(None),
        }
    }

    /// The current token, signing a new one if there is none or it is due for renewal.
    pub(crate) fn token(&self) -> String {
        self.token_at(Utc::now())
    }

    fn token_at(&self, now: DateTime<Utc>) -> String {
        // A poisoned lock only means another thread panicked mid-update of a cache entry
        // that is replaced wholesale, so its content is still usable.
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, renew_at)) = cached.as_ref() {
            if now < *renew_at {
                return token.clone();
            }
        }
        let token = self.signer.token(now - CLOCK_SKEW, now + VALIDITY);
        *cached = Some((token.clone(), now + RENEW_AFTER));
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// base64 of "tidemark-test-account-key-0123456789".
    const KEY: &str = "dGlkZW1hcmstdGVzdC1hY2NvdW50LWtleS0wMTIzNDU2Nzg5";

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        match Utc.with_ymd_and_hms(y, mo, d, h, 0, 0) {
            chrono::LocalResult::Single(t) => t,
            _ => panic!("bad test time"),
        }
    }

    #[test]
    fn string_to_sign_follows_the_spec() {
        let signer = AccountSasSigner::new("testaccount", KEY, false).expect("signer");
        assert_eq!(
            signer.string_to_sign("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
            "testaccount\nrwdlac\nb\nsco\n2024-01-01T00:00:00Z\n2024-01-02T00:00:00Z\n\nhttps\n\
             2022-11-02\n\n"
        );
    }

    #[test]
    fn signature_matches_a_hand_computed_one() {
        // Computed independently (Python's hmac/hashlib) over the string-to-sign above.
        let signer = AccountSasSigner::new("testaccount", KEY, false).expect("signer");
        let token = signer.token(at(2024, 1, 1, 0), at(2024, 1, 2, 0));
        assert_eq!(
            token,
            "sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&st=2024-01-01T00%3A00%3A00Z\
             &se=2024-01-02T00%3A00%3A00Z&spr=https\
             &sig=UFIyHnMz85ccSsNRMzaKsPCWG4T8o8XQ8oNe8Vn7Q6U%3D"
        );
    }

    #[test]
    fn http_endpoints_sign_both_protocols() {
        let signer = AccountSasSigner::new("a", KEY, true).expect("signer");
        assert!(signer.string_to_sign("s", "e").contains("\nhttps,http\n"));
        assert!(signer
            .token(at(2024, 1, 1, 0), at(2024, 1, 2, 0))
            .contains("&spr=https%2Chttp&"));
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(AccountSasSigner::new("a", "not base64!", false).is_err());
        assert!(AccountSasSigner::new("a", "", false).is_err());
        assert!(AccountSasSigner::new("", KEY, false).is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let signer = AccountSasSigner::new("a", KEY, false).expect("signer");
        let shown = format!("{:?}", RenewingSas::new(signer));
        assert!(!shown.contains("116, 105"), "{shown}");
        assert!(!shown.contains(KEY), "{shown}");
    }

    #[test]
    fn tokens_are_cached_then_renewed() {
        let sas = RenewingSas::new(AccountSasSigner::new("a", KEY, false).expect("signer"));
        let t0 = at(2024, 3, 1, 0);
        let first = sas.token_at(t0);
        assert!(first.contains("st=2024-02-29T23%3A45%3A00Z"), "{first}");
        assert!(first.contains("se=2024-03-02T00%3A00%3A00Z"), "{first}");
        assert_eq!(sas.token_at(t0 + Duration::hours(11)), first);
        let renewed = sas.token_at(t0 + Duration::hours(13));
        assert_ne!(renewed, first);
        assert!(renewed.contains("se=2024-03-02T13%3A00%3A00Z"), "{renewed}");
    }
}
