//! `tidemark serve`.

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

use crate::cli::ServeArgs;
use crate::config::ServiceConfig;

pub async fn run(
    data_dir: Option<PathBuf>,
    store: Option<String>,
    a: ServeArgs,
) -> anyhow::Result<()> {
    // Logs go to stderr; RUST_LOG refines them (default: info).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut config = ServiceConfig::load(a.config.as_deref())?;
    // Command-line flags win over the file and the environment.
    if let Some(d) = data_dir {
        config.data_dir = d;
    }
    if let Some(s) = store {
        config.store = Some(s);
    }
    if let Some(l) = a.listen {
        config.listen = l;
    }
    crate::service::serve(config).await
}
