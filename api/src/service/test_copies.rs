//! Test copies: isolated, writable image sets of a point, for test failovers. They live
//! in their own directory under the recovery directory, are made by a restore job, and
//! are undone by deleting them; protection and the domain's other images are never
//! touched.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::leases::Leases;
use super::records::Records;

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

/// The registry of test copies: one record each in DATA_DIR/test-copies. Each copy
/// holds a lease on its point for as long as it exists, so that it can be made again
/// (or its disks compared with the point) whatever GC does meanwhile.
pub struct TestCopies {
    records: Records,
    copies: Mutex<BTreeMap<String, TestCopyRecord>>,
    leases: Arc<Leases>,
}

/// The holder of a test copy's lease.
fn lease_holder(id: &str) -> String {
    format!("test-{id}")
}

impl TestCopies {
    /// Loads the registry and holds the copies' points again.
    pub fn open(dir: &Path, leases: Arc<Leases>) -> anyhow::Result<TestCopies> {
        let records = Records::open(dir)?;
        let copies: BTreeMap<String, TestCopyRecord> = records
            .load::<TestCopyRecord>()?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for r in copies.values() {
            leases.set(&r.domain, &lease_holder(&r.id), r.seq, false);
        }
        Ok(TestCopies {
            records,
            copies: Mutex::new(copies),
            leases,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TestCopyRecord>> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new test copy.
    pub fn add(&self, rec: TestCopyRecord) -> Result<(), ApiError> {
        self.records
            .save(&rec.id, &rec)
            .map_err(|e| ApiError::internal(format!("cannot record the test copy: {e}")))?;
        self.leases
            .set(&rec.domain, &lease_holder(&rec.id), rec.seq, false);
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
        if let Some(r) = self.lock().remove(id) {
            self.leases.clear(&r.domain, &lease_holder(&r.id));
        }
        self.records
            .remove(id)
            .map_err(|e| ApiError::internal(format!("cannot forget test copy {id}: {e}")))
    }
}
