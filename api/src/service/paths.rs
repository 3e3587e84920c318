//! Targets of restores: only below the recovery directory, whatever the request says.

use std::path::{Component, Path, PathBuf};

use super::error::ApiError;

/// The recovery directory, made and resolved once.
#[derive(Clone, Debug)]
pub struct RecoveryDir {
    root: PathBuf,
}

impl RecoveryDir {
    /// Creates the directory if needed and resolves it (symlinks included).
    pub fn open(dir: &Path) -> std::io::Result<RecoveryDir> {
        std::fs::create_dir_all(dir)?;
        Ok(RecoveryDir {
            root: dir.canonicalize()?,
        })
    }

    /// The resolved root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a relative target file path, creating its parent directories; refuses
    /// absolute paths, `..`, and anything whose resolved parent leaves the root (a
    /// symlink planted inside it).
    pub fn target(&self, rel: &str) -> Result<PathBuf, ApiError> {
        let refuse = |why: &str| ApiError::invalid(format!("target path {rel:?}: {why}"));
        if rel.is_empty() || rel.len() > 1024 || rel.contains('\0') {
            return Err(refuse("must be 1 to 1024 characters"));
        }
        if rel.ends_with('/') {
            return Err(refuse("names a directory, not an image file"));
        }
        let path = Path::new(rel);
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                Component::CurDir => {}
                _ => {
                    return Err(refuse(
                        "must be relative to the recovery directory, without '..'",
                    ))
                }
            }
        }
        let Some((file, dirs)) = parts.split_last() else {
            return Err(refuse("names no file"));
        };
        if file.to_string_lossy().ends_with(".tidemark-partial")
            || file.to_string_lossy().ends_with(".tidemark-resume")
        {
            return Err(refuse("uses a name reserved for restores in progress"));
        }
        let mut parent = self.root.clone();
        parent.extend(dirs);
        std::fs::create_dir_all(&parent)
            .map_err(|e| refuse(&format!("cannot create its directory: {e}")))?;
        let resolved = parent
            .canonicalize()
            .map_err(|e| refuse(&format!("cannot resolve its directory: {e}")))?;
        if !resolved.starts_with(&self.root) {
            return Err(refuse("leaves the recovery directory"));
        }
        let out = resolved.join(file);
        if out.is_symlink() || out.is_dir() {
            return Err(refuse("is a symlink or a directory"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_inside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = RecoveryDir::open(&tmp.path().join("rec")).expect("open");
        let ok = dir.target("site-b/vm1/disk0.img").expect("inside");
        assert!(ok.starts_with(dir.root()));
        assert!(ok.parent().is_some_and(|p| p.is_dir()));
        for bad in [
            "/etc/passwd",
            "../x.img",
            "a/../../x.img",
            "",
            "a/",
            "x.tidemark-partial",
        ] {
            assert!(dir.target(bad).is_err(), "{bad:?} accepted");
        }
        std::os::unix::fs::symlink(tmp.path(), dir.root().join("escape")).expect("symlink");
        assert!(dir.target("escape/x.img").is_err());
    }
}
