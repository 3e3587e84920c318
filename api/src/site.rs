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
    /// Opens (creating on first use) the data directory.
    pub fn open(data_dir: &Path, store_url: Option<&str>) -> anyhow::Result<Site> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let store = match store_url {
            Some(url) => open_store(url)?,
            None => open_store(&data_dir.join("store").display().to_string())?,
        };
        let index = Index::open(&data_dir.join("index"))
            .with_context(|| format!("cannot open the index in {}", data_dir.display()))?;
        let site_id = site_id(&data_dir.join("site-id"))?;
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

/// Reads the site id, generating and keeping one on first use.
fn site_id(path: &PathBuf) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => {
            let id = format!("site-{:016x}", rand::random::<u64>());
            std::fs::write(path, format!("{id}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
    }
}
