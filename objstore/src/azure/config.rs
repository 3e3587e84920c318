//! Configuration of the Azure backend: the explicit [`AzureConfig`], connection strings,
//! environment variables and `az://container/prefix` locations.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;

use crate::key::validate_key;
use crate::{Result, StoreError};

/// Account name of the Azurite emulator.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Account key of the Azurite emulator (public, the same for every installation).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Blob endpoint of a default local Azurite.
pub const AZURITE_BLOB_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// Environment variable holding a full connection string.
pub const ENV_CONNECTION_STRING: &str = "AZURE_STORAGE_CONNECTION_STRING";
/// Environment variable holding the storage account name.
pub const ENV_ACCOUNT: &str = "AZURE_STORAGE_ACCOUNT";
/// Environment variable holding the storage account key (base64).
pub const ENV_KEY: &str = "AZURE_STORAGE_KEY";
/// Environment variable holding a SAS token.
pub const ENV_SAS_TOKEN: &str = "AZURE_STORAGE_SAS_TOKEN";
/// Environment variable overriding the blob service endpoint.
pub const ENV_ENDPOINT: &str = "TIDEMARK_AZURE_ENDPOINT";

const MIB: u64 = 1 << 20;
/// Largest block Azure accepts (service versions 2019-12-12 and later).
const MAX_BLOCK_SIZE: u64 = 4000 * MIB;
/// Largest object a single Put Blob accepts (service versions 2019-12-12 and later).
const MAX_SINGLE_PUT: u64 = 5000 * MIB;

/// How requests to the storage account are authorised.
#[derive(Clone)]
pub enum AzureCredential {
    /// The shared account key (base64); the store signs its own account SAS tokens with
    /// it (valid 24 h, renewed after 12 h), so the key itself never goes over the wire.
    AccountKey(String),
    /// A SAS token (query string, with or without a leading `?`), used as is.
    SasToken(String),
    /// Entra ID: workload identity when configured, else the Azure CLI / Developer CLI
    /// login, else the host's managed identity (`AZURE_CLIENT_ID` selects a
    /// user-assigned one). https endpoints only.
    DefaultIdentity,
    /// Entra ID through the host's managed identity; `client_id` selects a user-assigned
    /// identity. https endpoints only.
    ManagedIdentity {
        /// Client ID of a user-assigned identity; `None` for the system-assigned one.
        client_id: Option<String>,
    },
    /// Entra ID through the Azure CLI or Azure Developer CLI login. https endpoints only.
    DeveloperTools,
    /// Entra ID through a caller-supplied credential. https endpoints only.
    TokenCredential(Arc<dyn TokenCredential>),
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets: show only which kind of credential this is.
        match self {
            Self::AccountKey(_) => f.write_str("AccountKey(<redacted>)"),
            Self::SasToken(_) => f.write_str("SasToken(<redacted>)"),
            Self::DefaultIdentity => f.write_str("DefaultIdentity"),
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Self::DeveloperTools => f.write_str("DeveloperTools"),
            Self::TokenCredential(c) => f.debug_tuple("TokenCredential").field(c).finish(),
        }
    }
}

/// Retry behaviour for throttling (429), server errors (500, 502, 503, 504), request
/// timeouts (408) and transport failures, applied to every request.
///
/// The delay before retry `n` (1-based) is `initial_delay * 2^n` plus 0–255 ms of random
/// jitter, capped at `max_delay`; a `Retry-After` the service sends is honoured when it
/// is longer.
#[derive(Clone, Debug)]
pub struct AzureRetry {
    /// Retries after the first try.
    pub max_retries: u32,
    /// Base of the exponential backoff.
    pub initial_delay: Duration,
    /// Longest single wait.
    pub max_delay: Duration,
    /// No retry starts after this much time since the first try.
    pub max_elapsed: Duration,
}

impl Default for AzureRetry {
    /// 6 retries (7 tries) waiting about 1, 2, 4, 8, 16 and 30 s, at most 2 minutes.
    fn default() -> Self {
        Self {
            max_retries: 6,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

/// Everything [`super::AzureStore::new`] needs.
#[derive(Clone, Debug)]
pub struct AzureConfig {
    /// Storage account name; needed to sign with an account key and to derive the
    /// default endpoint, otherwise only used in messages.
    pub account: String,
    /// Container holding the objects.
    pub container: String,
    /// Key prefix inside the container that is the store's root (`""` for the whole
    /// container); a valid key, without trailing `/`.
    pub prefix: String,
    /// Blob service endpoint, e.g. `http://127.0.0.1:10000/devstoreaccount1`; `None`
    /// means `https://{account}.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// How requests are authorised.
    pub credential: AzureCredential,
    /// Objects larger than this many bytes are uploaded as staged blocks (default 16 MiB).
    pub block_threshold: u64,
    /// Size of a staged block and of a ranged request of a large download (default 8 MiB).
    pub block_size: u64,
    /// Blocks or ranges of one object transferred in parallel (default 4).
    pub concurrency: usize,
    /// Retry behaviour of every request.
    pub retry: AzureRetry,
    /// Pass `start_after` to the service as `startFrom` (service version 2026-02-06), so a
    /// listing starts there instead of at the prefix. The store also filters client-side,
    /// so a service that ignores the parameter (Azurite) still lists correctly, only
    /// slower; turn this off for a service that rejects it. Default on.
    pub list_start_from: bool,
}

impl AzureConfig {
    /// A configuration with default tuning for `container` of `account`.
    pub fn new(
        account: impl Into<String>,
        container: impl Into<String>,
        credential: AzureCredential,
    ) -> Self {
        Self {
            account: account.into(),
            container: container.into(),
            prefix: String::new(),
            endpoint: None,
            credential,
            block_threshold: 16 * MIB,
            block_size: 8 * MIB,
            concurrency: 4,
            retry: AzureRetry::default(),
            list_start_from: true,
        }
    }

    /// A configuration from a connection string (`AccountName`, `AccountKey`,
    /// `SharedAccessSignature`, `BlobEndpoint`, `DefaultEndpointsProtocol`,
    /// `EndpointSuffix`, or `UseDevelopmentStorage=true` for a default local Azurite).
    /// Without a key or SAS the account is accessed with [`AzureCredential::DefaultIdentity`].
    pub fn from_connection_string(
        connection_string: &str,
        container: impl Into<String>,
    ) -> Result<Self> {
        let cs = ConnectionString::parse(connection_string)?;
        let container = container.into();
        if cs
            .get("UseDevelopmentStorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            let mut config = Self::new(
                AZURITE_ACCOUNT,
                container,
                AzureCredential::AccountKey(AZURITE_KEY.to_owned()),
            );
            config.endpoint = Some(AZURITE_BLOB_ENDPOINT.to_owned());
            return Ok(config);
        }
        let account = cs.get("AccountName").unwrap_or_default().to_owned();
        let credential = if let Some(key) = cs.get("AccountKey") {
            AzureCredential::AccountKey(key.to_owned())
        } else if let Some(sas) = cs.get("SharedAccessSignature") {
            AzureCredential::SasToken(sas.to_owned())
        } else {
            AzureCredential::DefaultIdentity
        };
        let endpoint = match cs.get("BlobEndpoint") {
            Some(endpoint) => endpoint.to_owned(),
            None => {
                if account.is_empty() {
                    return Err(StoreError::Config(
                        "Azure connection string has neither AccountName nor BlobEndpoint".into(),
                    ));
                }
                let protocol = cs.get("DefaultEndpointsProtocol").unwrap_or("https");
                let suffix = cs.get("EndpointSuffix").unwrap_or("core.windows.net");
                format!("{protocol}://{account}.blob.{suffix}")
            }
        };
        let mut config = Self::new(account, container, credential);
        config.endpoint = Some(endpoint);
        Ok(config)
    }

    /// A configuration from the environment: `AZURE_STORAGE_CONNECTION_STRING`, else
    /// `AZURE_STORAGE_ACCOUNT` with `AZURE_STORAGE_KEY`, else with
    /// `AZURE_STORAGE_SAS_TOKEN`, else with an Entra ID identity; `TIDEMARK_AZURE_ENDPOINT`
    /// overrides the endpoint.
    pub fn from_env(container: impl Into<String>, prefix: impl Into<String>) -> Result<Self> {
        from_lookup(container.into(), prefix.into(), None, &|name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        })
    }

    /// The blob service endpoint, derived from the account when not set.
    pub(super) fn endpoint_or_default(&self) -> Result<String> {
        match &self.endpoint {
            Some(e) => Ok(e.trim_end_matches('/').to_owned()),
            None if !self.account.is_empty() => {
                Ok(format!("https://{}.blob.core.windows.net", self.account))
            }
            None => Err(StoreError::Config(
                "Azure store needs an account name or an endpoint".into(),
            )),
        }
    }

    /// Checks the tuning values and names; returns the normalised prefix.
    pub(super) fn validate(&self) -> Result<String> {
        validate_container(&self.container)?;
        let prefix = self.prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            validate_key(prefix).map_err(|e| {
                StoreError::Config(format!("Azure store prefix {prefix:?} is not valid: {e}"))
            })?;
        }
        if self.block_size == 0 || self.block_size > MAX_BLOCK_SIZE {
            return Err(StoreError::Config(format!(
                "Azure block size must be between 1 byte and {MAX_BLOCK_SIZE} bytes, got {}",
                self.block_size
            )));
        }
        if self.block_threshold > MAX_SINGLE_PUT {
            return Err(StoreError::Config(format!(
                "Azure block threshold must be at most {MAX_SINGLE_PUT} bytes (the largest \
                 single upload), got {}",
                self.block_threshold
            )));
        }
        if self.concurrency == 0 {
            return Err(StoreError::Config(
                "Azure concurrency must be at least 1".into(),
            ));
        }
        Ok(prefix.to_owned())
    }
}

/// Resolves the configuration from `lookup` (the environment, or a map in tests), with an
/// optional endpoint that takes precedence over every other source.
pub(super) fn from_lookup(
    container: String,
    prefix: String,
    endpoint: Option<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<AzureConfig> {
    let mut config = if let Some(cs) = lookup(ENV_CONNECTION_STRING) {
        AzureConfig::from_connection_string(&cs, container)?
    } else {
        let Some(account) = lookup(ENV_ACCOUNT) else {
            return Err(StoreError::Config(format!(
                "Azure store for container {container:?}: no credentials configured; set \
                 {ENV_CONNECTION_STRING}, or {ENV_ACCOUNT} together with {ENV_KEY} or \
                 {ENV_SAS_TOKEN} (or alone, to use an Entra ID identity)"
            )));
        };
        let credential = if let Some(key) = lookup(ENV_KEY) {
            AzureCredential::AccountKey(key)
        } else if let Some(sas) = lookup(ENV_SAS_TOKEN) {
            AzureCredential::SasToken(sas)
        } else {
            AzureCredential::DefaultIdentity
        };
        AzureConfig::new(account, container, credential)
    };
    config.prefix = prefix;
    if let Some(endpoint) = endpoint.or_else(|| lookup(ENV_ENDPOINT)) {
        config.endpoint = Some(endpoint);
    }
    Ok(config)
}

/// Container names: 3–63 characters of lowercase letters, digits and single hyphens,
/// starting and ending with a letter or digit.
fn validate_container(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok = (3..=63).contains(&name.len())
        && ok_chars
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "Azure container name {name:?} is not valid (3-63 lowercase letters, digits and \
             single hyphens, starting and ending with a letter or digit)"
        )))
    }
}

/// A parsed `Key=Value;Key=Value` connection string; keys compare case-insensitively.
struct ConnectionString {
    pairs: Vec<(String, String)>,
}

impl ConnectionString {
    fn parse(s: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            // Split at the first '=' only: keys and SAS tokens contain '=' themselves.
            let Some((k, v)) = part.split_once('=') else {
                // Never echo the part: it may be (a piece of) a secret.
                return Err(StoreError::Config(
                    "Azure connection string has an entry without '='".into(),
                ));
            };
            pairs.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if pairs.is_empty() {
            return Err(StoreError::Config(
                "Azure connection string is empty".into(),
            ));
        }
        Ok(Self { pairs })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(key) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_err<T: fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(StoreError::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn connection_strings() {
        let c = AzureConfig::from_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
            "box",
        )
        .expect("parse");
        assert_eq!(c.account, "devstoreaccount1");
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert!(matches!(c.credential, AzureCredential::AccountKey(ref k) if k == "a2V5"));

        let c = AzureConfig::from_connection_string(
            "AccountName=acct;SharedAccessSignature=sv=2022-11-02&sig=x%3D;EndpointSuffix=core.chinacloudapi.cn",
            "box",
        )
        .expect("parse");
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://acct.blob.core.chinacloudapi.cn")
        );
        assert!(
            matches!(c.credential, AzureCredential::SasToken(ref s) if s == "sv=2022-11-02&sig=x%3D")
        );

        let c = AzureConfig::from_connection_string("UseDevelopmentStorage=true", "box")
            .expect("parse");
        assert_eq!(c.account, AZURITE_ACCOUNT);
        assert_eq!(c.endpoint.as_deref(), Some(AZURITE_BLOB_ENDPOINT));

        let c = AzureConfig::from_connection_string("accountname=acct", "box").expect("parse");
        assert!(matches!(c.credential, AzureCredential::DefaultIdentity));
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://acct.blob.core.windows.net")
        );

        assert!(config_err(AzureConfig::from_connection_string("", "box")).contains("empty"));
        let msg = config_err(AzureConfig::from_connection_string("AccountKey", "box"));
        assert!(msg.contains("without '='"), "{msg}");
        let msg = config_err(AzureConfig::from_connection_string(
            "AccountKey=a2V5",
            "box",
        ));
        assert!(msg.contains("AccountName"), "{msg}");
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment() {
        let c = from_lookup(
            "box".into(),
            "p".into(),
            None,
            &env(&[
                (ENV_ACCOUNT, "acct"),
                (ENV_KEY, "a2V5"),
                (ENV_SAS_TOKEN, "sv=1"),
            ]),
        )
        .expect("key");
        assert!(matches!(c.credential, AzureCredential::AccountKey(_)));
        assert_eq!(c.prefix, "p");
        assert_eq!(c.endpoint, None);

        let c = from_lookup(
            "box".into(),
            String::new(),
            None,
            &env(&[
                (ENV_ACCOUNT, "acct"),
                (ENV_SAS_TOKEN, "?sv=1"),
                (ENV_ENDPOINT, "http://localhost:1/acct"),
            ]),
        )
        .expect("sas");
        assert!(matches!(c.credential, AzureCredential::SasToken(_)));
        assert_eq!(c.endpoint.as_deref(), Some("http://localhost:1/acct"));

        let c = from_lookup(
            "box".into(),
            String::new(),
            Some("http://url-wins/acct".into()),
            &env(&[
                (ENV_CONNECTION_STRING, "UseDevelopmentStorage=true"),
                (ENV_ACCOUNT, "ignored"),
                (ENV_ENDPOINT, "http://env-loses/acct"),
            ]),
        )
        .expect("connection string");
        assert_eq!(c.account, AZURITE_ACCOUNT);
        assert_eq!(c.endpoint.as_deref(), Some("http://url-wins/acct"));

        let c = from_lookup(
            "box".into(),
            String::new(),
            None,
            &env(&[(ENV_ACCOUNT, "a")]),
        )
        .expect("identity");
        assert!(matches!(c.credential, AzureCredential::DefaultIdentity));

        let msg = config_err(from_lookup("box".into(), String::new(), None, &env(&[])));
        assert!(
            msg.contains(ENV_CONNECTION_STRING) && msg.contains(ENV_ACCOUNT),
            "{msg}"
        );
    }

    #[test]
    fn validation() {
        let mut c = AzureConfig::new("a", "box", AzureCredential::DeveloperTools);
        assert_eq!(c.validate().expect("valid"), "");
        c.prefix = "x/y/".into();
        assert_eq!(c.validate().expect("valid"), "x/y");
        c.prefix = "../x".into();
        assert!(config_err(c.validate()).contains("prefix"));
        c.prefix = String::new();
        for bad in ["ab", "Box", "a--b", "-ab", "ab-", "a_b", &"a".repeat(64)] {
            c.container = bad.to_owned();
            assert!(config_err(c.validate()).contains("container"), "{bad}");
        }
        c.container = "box".into();
        c.block_size = 0;
        assert!(config_err(c.validate()).contains("block size"));
        c.block_size = MIB;
        c.concurrency = 0;
        assert!(config_err(c.validate()).contains("concurrency"));
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!(
            "{:?} {:?}",
            AzureCredential::AccountKey("c2VjcmV0".into()),
            AzureConfig::new("a", "box", AzureCredential::SasToken("sig=secret".into()))
        );
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
