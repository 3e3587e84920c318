//! A directory of JSON records, one file per id, each replaced atomically: how jobs and
//! test copies outlive a restart.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A record directory.
#[derive(Clone, Debug)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> std::io::Result<Records> {
        std::fs::create_dir_all(dir)?;
        Ok(Records {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Every readable record; unreadable files are logged and skipped.
    pub fn load<T: DeserializeOwned>(&self) -> std::io::Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
            {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("ignoring unreadable record {}: {e}", path.display()),
            }
        }
        Ok(out)
    }

    /// Writes a record: a synced temporary file renamed over the old one, so a crash
    /// leaves either version, never a torn one.
    pub fn save<T: Serialize>(&self, id: &str, record: &T) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.path(id);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself must survive a power loss: a replica's record names the
        // point its images move to before they change.
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Deletes a record; one already gone is fine.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_skipped() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = Records::open(tmp.path()).expect("open");
        r.save("a", &vec![1u32, 2]).expect("save");
        r.save("a", &vec![3u32]).expect("replace");
        std::fs::write(tmp.path().join("b.json"), b"{not json").expect("garbage");
        assert_eq!(r.load::<Vec<u32>>().expect("load"), vec![vec![3u32]]);
        r.remove("a").expect("remove");
        r.remove("a").expect("again");
        assert!(r.load::<Vec<u32>>().expect("load").is_empty());
    }
}
