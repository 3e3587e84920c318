//! The CLI's client of a running service (`--server URL --token T`).

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::service::error::ErrorBody;

/// An error answered by the service, kept with its status and code so the CLI exits
/// with the same codes as when it works on a local data directory.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status}, {code})")]
pub struct RemoteError {
    /// HTTP status.
    pub status: u16,
    /// The API's error code.
    pub code: String,
    /// Its message.
    pub message: String,
}

/// A connection to a service.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the service at `base` (http://host:port).
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Client> {
        Self::build(base, token, reqwest::Client::builder())
    }

    /// A client whose every request gives up after `timeout` (one service calling
    /// another must not hang on it).
    pub fn with_timeout(
        base: &str,
        token: Option<&str>,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Client> {
        Self::build(base, token, reqwest::Client::builder().timeout(timeout))
    }

    fn build(
        base: &str,
        token: Option<&str>,
        builder: reqwest::ClientBuilder,
    ) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            anyhow::bail!("{base:?}: expected http://HOST:PORT");
        }
        Ok(Client {
            http: builder.build()?,
            base,
            token: token.map(str::to_owned),
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send<T: DeserializeOwned>(&self, r: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = r.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Err(remote_error(status, &body).into());
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    /// POST a JSON body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_vec(body)?;
        self.send(
            self.request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// DELETE a resource.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// POST a binary body.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        self.send(
            self.request(Method::POST, path)
                .header("content-type", "application/octet-stream")
                .body(body),
        )
        .await
    }
}

fn remote_error(status: StatusCode, body: &[u8]) -> RemoteError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => RemoteError {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => RemoteError {
            status: status.as_u16(),
            code: "http".into(),
            message: String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect(),
        },
    }
}
