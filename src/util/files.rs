//! Files written atomically: a temporary file beside the target (so that renaming it into place
//! is atomic), renamed only once it is complete.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut scratch = scratch_beside(path)?;
    scratch.write_all(bytes)?;
    persist(scratch, path)
}

/// A temporary file in the target's directory (so that renaming it into place is atomic).
pub fn scratch_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    // A temporary file is private (0600); the model is an ordinary file (0644 before umask).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder.suffix(".partial").tempfile_in(dir)
}

/// Moves a finished temporary file to `path`.
pub fn persist(scratch: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    scratch.as_file().sync_all()?;
    scratch.persist(path).map_err(|e| e.error)?;
    Ok(())
}
