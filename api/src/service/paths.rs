//! Targets of restores: only below the recovery directory, whatever the request says.

use std::path::{Component, Path, PathBuf};

use super::error::ApiError;

/// The recovery directory, made and resolved once.
#[derive(Clone, Debug)]
pub struct RecoveryDir {
    root: PathBuf,
}

impl RecoveryDir {
    /// Whether `path` is inside the root, resolving symlinks.
    pub fn contains(&self, path: &Path) -> bool {
        path.canonicalize().is_ok_and(|p| p.starts_with(&self.root))
    }

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
    /// absolute paths, `..`, and symlinks on the way (one planted inside the root).
    /// The job later opens the path it returns; a symlink planted after this check is
    /// not caught (the recovery directory belongs to the service).
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
        if file.to_string_lossy().contains(".tidemark-") {
            return Err(refuse("uses a name reserved for restores in progress"));
        }
        // Walk down one directory at a time without following symlinks, so that a
        // symlink planted inside the root is refused before anything is created
        // through it.
        let mut parent = self.root.clone();
        for d in dirs {
            parent.push(d);
            match std::fs::symlink_metadata(&parent) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse("goes through a symlink"));
                }
                Ok(m) if !m.is_dir() => return Err(refuse("goes through a file")),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match std::fs::create_dir(&parent) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            // Made meanwhile (another request); checked again below.
                        }
                        Err(e) => return Err(refuse(&format!("cannot create its directory: {e}"))),
                    }
                    if std::fs::symlink_metadata(&parent).is_ok_and(|m| !m.is_dir()) {
                        return Err(refuse("goes through a symlink or a file"));
                    }
                }
                Err(e) => return Err(refuse(&format!("cannot read its directory: {e}"))),
            }
        }
        let out = parent.join(file);
        if let Ok(m) = std::fs::symlink_metadata(&out) {
            if m.file_type().is_symlink() || m.is_dir() {
                return Err(refuse("is a symlink or a directory"));
            }
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
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        std::os::unix::fs::symlink(&outside, dir.root().join("escape")).expect("symlink");
        assert!(dir.target("escape/x.img").is_err());
        assert!(dir.target("escape/new/x.img").is_err());
        assert!(
            !outside.join("new").exists(),
            "nothing created through the symlink"
        );
        assert!(dir.target("x.tidemark-resume.tmp").is_err());
    }
}
