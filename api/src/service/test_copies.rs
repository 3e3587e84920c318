//! Test copies: isolated, writable image sets of a point, for test failovers. They live
//! in their own directory under the recovery directory, are made by a restore job, and
//! are undone by deleting them; protection and the domain's other images are never
//! touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;

/// A test copy as stored (its job tells how far it is).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TestCopyRecord {
    /// Test copy id.
    pub id: String,
    /// The domain copied.
    pub domain: String,
    /// The point copied.
    pub seq: u64,
    /// The directory holding its images, one `<disk>.img` per disk.
    pub dir: String,
    /// The job that materialises it.
    pub job_id: String,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// The registry of test copies: one JSON file each in DATA_DIR/test-copies.
pub struct TestCopies {
    dir: PathBuf,
    copies: Mutex<BTreeMap<String, TestCopyRecord>>,
}

impl TestCopies {
    /// Loads the registry.
    pub fn open(dir: &Path) -> anyhow::Result<TestCopies> {
        std::fs::create_dir_all(dir)?;
        let mut copies = BTreeMap::new();
        for e in std::fs::read_dir(dir)? {
            let path = e?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<TestCopyRecord>(&b)?))
            {
                Ok(r) => {
                    copies.insert(r.id.clone(), r);
                }
                Err(e) => tracing::warn!("ignoring unreadable {}: {e}", path.display()),
            }
        }
        Ok(TestCopies {
            dir: dir.to_owned(),
            copies: Mutex::new(copies),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TestCopyRecord>> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new test copy.
    pub fn add(&self, rec: TestCopyRecord) -> Result<(), ApiError> {
        let path = self.dir.join(format!("{}.json", rec.id));
        let body = serde_json::to_vec_pretty(&rec)
            .map_err(|e| ApiError::internal(format!("cannot encode the test copy: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| ApiError::internal(format!("cannot record the test copy: {e}")))?;
        self.lock().insert(rec.id.clone(), rec);
        Ok(())
    }

    /// One test copy.
    pub fn get(&self, id: &str) -> Result<TestCopyRecord, ApiError> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no test copy {id:?}")))
    }

    /// Every test copy, oldest first.
    pub fn list(&self) -> Vec<TestCopyRecord> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        v
    }

    /// Forgets a test copy (its images must already be gone).
    pub fn remove(&self, id: &str) -> Result<(), ApiError> {
        self.lock().remove(id);
        match std::fs::remove_file(self.dir.join(format!("{id}.json"))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ApiError::internal(format!(
                "cannot forget test copy {id}: {e}"
            ))),
            _ => Ok(()),
        }
    }
}
