//! Bearer tokens: read tokens may GET, write tokens may do anything. Tokens are
//! compared in constant time and never logged; only their names are.

use std::path::Path;

use anyhow::Context;
use axum::http::{header, Method, Request};

use crate::config::{Access, TokenConfig};

use super::error::ApiError;

/// The tokens the service accepts.
pub struct Tokens {
    tokens: Vec<TokenConfig>,
}

impl Tokens {
    /// The configured tokens; with none, a write token generated once into
    /// DATA_DIR/admin-token (mode 0600), so a service on embedded defaults is usable by
    /// whoever can read its data directory.
    pub fn from_config(tokens: &[TokenConfig], data_dir: &Path) -> anyhow::Result<Tokens> {
        if !tokens.is_empty() {
            return Ok(Tokens {
                tokens: tokens.to_vec(),
            });
        }
        let path = data_dir.join("admin-token");
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() >= 16 => t.trim().to_owned(),
            _ => {
                let t = format!(
                    "{:016x}{:016x}",
                    rand::random::<u64>(),
                    rand::random::<u64>()
                );
                write_private(&path, &format!("{t}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                t
            }
        };
        tracing::info!(
            "no tokens configured: the admin token is in {}",
            path.display()
        );
        Ok(Tokens {
            tokens: vec![TokenConfig {
                name: "admin-token".into(),
                token,
                access: Access::Write,
            }],
        })
    }

    /// Checks a request's bearer token against what the request does.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), ApiError> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing Authorization: Bearer <token>",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be Bearer <token>"))?;
        // Every token is compared, whatever matched, so timing tells nothing.
        let mut found: Option<&TokenConfig> = None;
        for t in &self.tokens {
            if constant_time_eq(t.token.as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        let Some(t) = found else {
            return Err(ApiError::unauthorized("unknown token"));
        };
        let reads = matches!(*req.method(), Method::GET | Method::HEAD);
        if !reads && t.access != Access::Write {
            return Err(ApiError::forbidden(format!(
                "token {:?} may only read",
                t.name
            )));
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/v1/domains");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn read_and_write_tokens() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::from_config(
            &[
                TokenConfig {
                    name: "w".into(),
                    token: "write-token-0123456".into(),
                    access: Access::Write,
                },
                TokenConfig {
                    name: "r".into(),
                    token: "read-token-01234567".into(),
                    access: Access::Read,
                },
            ],
            tmp.path(),
        )
        .expect("tokens");
        let status = |r: Result<(), ApiError>| r.err().map(|e| e.status.as_u16());
        assert_eq!(status(tokens.check(&req(Method::GET, None))), Some(401));
        assert_eq!(
            status(tokens.check(&req(Method::GET, Some("Bearer nope")))),
            Some(401)
        );
        assert_eq!(
            status(tokens.check(&req(Method::GET, Some("Basic x")))),
            Some(401)
        );
        assert_eq!(
            status(tokens.check(&req(Method::GET, Some("Bearer read-token-01234567")))),
            None
        );
        assert_eq!(
            status(tokens.check(&req(Method::POST, Some("Bearer read-token-01234567")))),
            Some(403)
        );
        assert_eq!(
            status(tokens.check(&req(Method::POST, Some("Bearer write-token-0123456")))),
            None
        );
        assert_eq!(
            status(tokens.check(&req(Method::POST, Some("Bearer write-token-012345")))),
            Some(401)
        );
    }

    #[test]
    fn generated_admin_token_is_kept_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = Tokens::from_config(&[], tmp.path()).expect("tokens");
        let b = Tokens::from_config(&[], tmp.path()).expect("tokens");
        assert_eq!(a.tokens[0].token, b.tokens[0].token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tmp.path().join("admin-token"))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
