//! Owner-only files and directories: what holds patient data (the store, exports) or private
//! keys is created 0700 (directories) and 0600 (files) whatever the process umask.
//!
//! Owns the Unix permission rules and nothing else: callers decide which paths are private.
//! On other platforms the functions create what is asked and check nothing.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::warn;

/// Mode of a private directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a private file.
pub const FILE_MODE: u32 = 0o600;

/// A private directory that cannot be made private.
#[derive(Debug, Error)]
pub enum PrivateDirError {
    /// Creating, reading or changing it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The path exists and is not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// It is open to group or others and belongs to another user, so hl7d must not change it.
    #[error(
        "{}: mode {mode:04o} lets other users in, and it belongs to uid {owner}, not to this process (uid {uid}): \
         use a directory of your own, or `chmod 700 {}` as its owner",
        path.display(),
        path.display()
    )]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        uid: u32,
    },
}

/// Makes `dir` a private directory: creates it (and missing parents) 0700, or, when it
/// exists with group or other bits, tightens it to 0700 with a warning if it is ours and
/// refuses it if it belongs to another user. For directories hl7d owns: the data directory,
/// the embedded default's TLS directory.
pub fn secure_dir(dir: &Path) -> Result<(), PrivateDirError> {
    let io_error = |source| PrivateDirError::Io { path: dir.to_owned(), source };
    let metadata = match std::fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return create_dir_all(dir).map_err(io_error),
        Err(e) => return Err(io_error(e)),
    };
    if !metadata.is_dir() {
        return Err(PrivateDirError::NotADirectory { path: dir.to_owned() });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = metadata.mode() & 0o7777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        let uid = rustix::process::geteuid().as_raw();
        if metadata.uid() != uid {
            return Err(PrivateDirError::NotOurs { path: dir.to_owned(), mode, owner: metadata.uid(), uid });
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(io_error)?;
        warn!(path = %dir.display(), from = %format!("{mode:04o}"), to = %format!("{DIR_MODE:04o}"),
            "directory was open to other users; tightened (it holds patient data or keys)");
    }
    Ok(())
}

/// Creates `dir` and any missing parents with mode 0700; an existing directory is left as
/// it is. For directories a user names (an export's `--out`).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// Writes `contents` to `path` as a private file (0600): created with that mode, and an
/// existing file is truncated and set to it. Without `overwrite`, an existing file is an
/// [`io::ErrorKind::AlreadyExists`] error.
pub fn write(path: &Path, contents: &[u8], overwrite: bool) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let mut file = options.open(path)?;
    // An existing file keeps its mode on truncate.
    tighten_open(&file)?;
    file.write_all(contents)
}

/// Creates `path` as an empty private file if it is missing; an existing one with group or
/// other bits is set to 0600 (with a warning). For files another library creates on its own
/// (SQLite's database: it gives its `-wal` and `-shm` files the database file's mode).
pub fn secure_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = file.metadata()?.mode() & 0o7777;
        if mode & 0o077 != 0 {
            tighten_open(&file)?;
            warn!(path = %path.display(), from = %format!("{mode:04o}"), to = %format!("{FILE_MODE:04o}"),
                "file was open to other users; tightened");
        }
    }
    Ok(())
}

/// [`secure_file`] for a file that may not exist: a missing one is not created.
pub fn secure_file_if_present(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => secure_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn tighten_open(file: &std::fs::File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn secure_dir_creates_0700_and_tightens_an_open_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("dir");
        let dir = base.join("a/b");
        secure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&base.join("a")), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        secure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::write(base.join("file"), b"x").unwrap();
        assert!(matches!(secure_dir(&base.join("file")), Err(PrivateDirError::NotADirectory { .. })));
    }

    #[test]
    fn write_and_secure_file_leave_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("file");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(write(&path, b"new", false).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        write(&path, b"new", true).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");

        let db = dir.join("db");
        secure_file_if_present(&db).unwrap();
        assert!(!db.exists());
        secure_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).unwrap();
        std::fs::write(&db, b"keep").unwrap();
        secure_file_if_present(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::read(&db).unwrap(), b"keep");
    }
}
