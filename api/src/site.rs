//! The local site: its data directory, store, index and site id.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tidemark_ingest::{IngestConfig, IngestContext};
use tidemark_objstore::{open_store, DynStore};
use tidemark_pitr_index::Index;

/// Everything a command needs.
pub struct Site {
    pub store: DynStore,
    pub index: Arc<Index>,
    pub site_id: String,
}

impl Site {
    /// Opens (creating on first use) the data directory. `site_id` names the site
    /// instead of the kept id; a data directory already kept for another site refuses it.
    pub fn open(
        data_dir: &Path,
        store_url: Option<&str>,
        site_id: Option<&str>,
    ) -> anyhow::Result<Site> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let store = match store_url {
            Some(url) => open_store(url)?,
            None => open_store(&data_dir.join("store").display().to_string())?,
        };
        let index = Index::open(&data_dir.join("index"))
            .with_context(|| format!("cannot open the index in {}", data_dir.display()))?;
        let site_id = kept_site_id(&data_dir.join("site-id"), site_id)?;
        Ok(Site {
            store,
            index: Arc::new(index),
            site_id,
        })
    }

    /// The write path's context for this site.
    pub fn ingest(&self) -> IngestContext {
        IngestContext {
            store: self.store.clone(),
            index: self.index.clone(),
            config: IngestConfig::default(),
            site: self.site_id.clone(),
        }
    }
}

/// Reads the site id, keeping `wanted` (or a generated one) on first use. The index and
/// the ownership of domains belong to one site, so a directory never changes site.
fn kept_site_id(path: &PathBuf, wanted: Option<&str>) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => {
            let kept = s.trim();
            if let Some(w) = wanted.filter(|w| *w != kept) {
                anyhow::bail!(
                    "the data directory belongs to site {kept:?}, not {w:?}; use another data directory for another site"
                );
            }
            Ok(kept.to_owned())
        }
        _ => {
            let id = wanted
                .map(str::to_owned)
                .unwrap_or_else(|| format!("site-{:016x}", rand::random::<u64>()));
            std::fs::write(path, format!("{id}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
    }
}
