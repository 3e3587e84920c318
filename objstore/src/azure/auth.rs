//! Request authorisation: a pipeline policy that appends a SAS token to every request,
//! and the Entra ID credential chain used when there is neither a key nor a SAS.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential,
};

use super::sas::RenewingSas;

/// Where the SAS token of a request comes from.
pub(super) enum SasSource {
    /// A token given by the user, used as is.
    Fixed(String),
    /// Tokens signed with the account key, renewed as they age.
    Signed(RenewingSas),
}

/// Appends the current SAS token to each request's query string.
///
/// It runs once per call, before the retry policy, so that retries of a request (which
/// reuse the same URL) do not append the token again; a token lives for a day, far longer
/// than any call with its retries.
pub(super) struct SasPolicy {
    source: SasSource,
}

impl SasPolicy {
    /// A policy that authorises requests with tokens from `source`.
    pub(super) fn new(source: SasSource) -> Self {
        Self { source }
    }
}

impl fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            SasSource::Fixed(_) => "fixed",
            SasSource::Signed(_) => "signed",
        };
        f.debug_struct("SasPolicy")
            .field("source", &kind)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let token = match &self.source {
            SasSource::Fixed(token) => token.clone(),
            SasSource::Signed(sas) => sas.token(),
        };
        let url = request.url_mut();
        let query = match url.query() {
            Some(q) if !q.is_empty() => format!("{q}&{token}"),
            _ => token,
        };
        url.set_query(Some(&query));
        match next.split_first() {
            Some((policy, rest)) => policy.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "SAS policy is the last policy of the pipeline",
            )),
        }
    }
}

/// Strips the `?` some tools put in front of a SAS token.
pub(super) fn normalise_sas(token: &str) -> String {
    token.trim().trim_start_matches('?').to_owned()
}

/// Entra ID credentials tried in order; the first that yields a token is used from then on.
///
/// Order: workload identity (only when Kubernetes has configured it), developer tools
/// (Azure CLI, then Azure Developer CLI), managed identity. Developer tools come before
/// managed identity because they fail fast when absent, whereas probing the instance
/// metadata endpoint off Azure waits for connection timeouts.
pub(super) struct DefaultIdentity {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: AtomicUsize,
}

impl fmt::Debug for DefaultIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|(n, _)| *n).collect();
        f.debug_struct("DefaultIdentity")
            .field("sources", &names)
            .finish_non_exhaustive()
    }
}

impl DefaultIdentity {
    /// Builds the chain from the environment (`AZURE_FEDERATED_TOKEN_FILE`,
    /// `AZURE_CLIENT_ID`); credentials that cannot be constructed here are left out.
    pub(super) fn new() -> azure_core::Result<Arc<Self>> {
        let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
        let mut failures = Vec::new();
        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            match WorkloadIdentityCredential::new(None) {
                Ok(c) => sources.push(("workload identity", c)),
                Err(e) => failures.push(format!("workload identity: {e}")),
            }
        }
        match DeveloperToolsCredential::new(None) {
            Ok(c) => sources.push(("developer tools", c)),
            Err(e) => failures.push(format!("developer tools: {e}")),
        }
        match managed_identity(std::env::var("AZURE_CLIENT_ID").ok()) {
            Ok(c) => sources.push(("managed identity", c)),
            Err(e) => failures.push(format!("managed identity: {e}")),
        }
        if sources.is_empty() {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!(
                    "no Entra ID credential is available: {}",
                    failures.join("; ")
                ),
            ));
        }
        Ok(Arc::new(Self {
            sources,
            chosen: AtomicUsize::new(usize::MAX),
        }))
    }
}

/// A managed identity credential, user-assigned when `client_id` is given.
pub(super) fn managed_identity(
    client_id: Option<String>,
) -> azure_core::Result<Arc<ManagedIdentityCredential>> {
    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: client_id
            .filter(|id| !id.is_empty())
            .map(UserAssignedId::ClientId),
        ..Default::default()
    }))
}

#[async_trait]
impl TokenCredential for DefaultIdentity {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = self.chosen.load(Ordering::Relaxed);
        if let Some((_, source)) = self.sources.get(chosen) {
            return source.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (i, (name, source)) in self.sources.iter().enumerate() {
            match source.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    tracing::info!(credential = name, "using Entra ID credential");
                    self.chosen.store(i, Ordering::Relaxed);
                    return Ok(token);
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "no Entra ID credential produced a token ({}); set \
                 AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, log in with `az login`, or run \
                 with a managed identity",
                failures.join("; ")
            ),
        ))
    }
}
