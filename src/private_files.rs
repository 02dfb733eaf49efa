//! Owner-only files and directories: what holds patient data (the store, exports) or private
//! keys is created 0700 (directories) and 0600 (files) whatever the process umask.
//!
//! Owns the Unix permission rules and nothing else: callers decide which paths are private.
//! [`check_dir`], [`can_create_in`] and [`can_read_write`] answer the same questions without
//! creating or changing anything, for the start-up checks (`preflight`). On other platforms
//! the functions create what is asked and check nothing.

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
    /// This process may not create files in it (or, when it is missing, in the existing
    /// directory it would be created under).
    #[error("{}: this process cannot create files here: {source}", path.display())]
    NotWritable {
        /// The directory checked.
        path: PathBuf,
        /// What `access(2)` answered.
        source: io::Error,
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

/// What [`secure_dir`] would do with `dir`, checked without creating or changing anything:
/// `Ok` when it would succeed and this process could then create files in `dir`; otherwise
/// the error it would give, or [`PrivateDirError::NotWritable`].
///
/// A missing `dir` is checked at the nearest directory that exists above it (where it and
/// its missing parents would be created); a file in the way is
/// [`PrivateDirError::NotADirectory`]. A directory of ours that is open to others passes:
/// [`secure_dir`] tightens it.
pub fn check_dir(dir: &Path) -> Result<(), PrivateDirError> {
    let io_error = |path: &Path, source| PrivateDirError::Io { path: path.to_owned(), source };
    let not_writable = |path: &Path, source| PrivateDirError::NotWritable { path: path.to_owned(), source };
    match std::fs::metadata(dir) {
        Ok(metadata) if !metadata.is_dir() => Err(PrivateDirError::NotADirectory { path: dir.to_owned() }),
        Ok(metadata) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let mode = metadata.mode() & 0o7777;
                let uid = rustix::process::geteuid().as_raw();
                if mode & 0o077 != 0 && metadata.uid() != uid {
                    let owner = metadata.uid();
                    return Err(PrivateDirError::NotOurs { path: dir.to_owned(), mode, owner, uid });
                }
            }
            #[cfg(not(unix))]
            let _ = metadata;
            can_create_in(dir).map_err(|e| not_writable(dir, e))
        }
        Err(e) if missing(&e) => {
            let mut above = dir.parent();
            while let Some(parent) = above {
                // The parent of a bare relative name is "": the working directory.
                let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
                match std::fs::metadata(parent) {
                    Ok(metadata) if metadata.is_dir() => {
                        return can_create_in(parent).map_err(|e| not_writable(parent, e));
                    }
                    Ok(_) => return Err(PrivateDirError::NotADirectory { path: parent.to_owned() }),
                    Err(e) if missing(&e) && parent != Path::new(".") => above = parent.parent(),
                    Err(e) => return Err(io_error(parent, e)),
                }
            }
            Err(io_error(dir, e))
        }
        Err(e) => Err(io_error(dir, e)),
    }
}

/// Whether this process (its effective uid and groups) may create entries in the directory
/// `dir`: write and search permission, on a file system mounted read-write.
pub fn can_create_in(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use rustix::fs::Access;
        access(dir, Access::WRITE_OK | Access::EXEC_OK)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Whether this process (its effective uid and groups) may read and write the file `path`.
pub fn can_read_write(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use rustix::fs::Access;
        access(path, Access::READ_OK | Access::WRITE_OK)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(unix)]
fn access(path: &Path, access: rustix::fs::Access) -> io::Result<()> {
    // AT_EACCESS: the effective ids, the ones that will open the file.
    rustix::fs::accessat(rustix::fs::CWD, path, access, rustix::fs::AtFlags::EACCESS).map_err(io::Error::from)
}

/// Not there: the path, or a directory on the way to it, is missing (or is a file).
fn missing(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
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
    let mut file = open_for_write(path, FILE_MODE, overwrite)?;
    // An existing file keeps its mode on truncate.
    tighten_open(&file)?;
    file.write_all(contents)
}

/// Opens `path` for writing, created with `mode` (umask applies, as always for a new
/// file): truncated when `overwrite`, else a new file or [`io::ErrorKind::AlreadyExists`].
/// Certificates (public, 0644) are written through this too.
pub fn open_for_write(path: &Path, mode: u32, overwrite: bool) -> io::Result<std::fs::File> {
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
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
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
    fn check_dir_answers_as_secure_dir_would_without_creating_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("check");
        std::fs::create_dir_all(&base).unwrap();
        // Missing, with missing parents: checked where it would be created.
        let deep = base.join("a/b/c");
        check_dir(&deep).unwrap();
        assert!(!base.join("a").exists(), "check_dir created something");
        // A file in the way, at the directory itself or above it.
        std::fs::write(base.join("file"), b"x").unwrap();
        let error = check_dir(&base.join("file")).unwrap_err();
        assert!(
            matches!(&error, PrivateDirError::NotADirectory { path } if path == &base.join("file")),
            "{error}"
        );
        let error = check_dir(&base.join("file/data")).unwrap_err();
        assert!(
            matches!(&error, PrivateDirError::NotADirectory { path } if path == &base.join("file")),
            "{error}"
        );
        // An existing directory of ours, open to others: secure_dir tightens it, so it passes.
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_dir(&base).unwrap();
        assert_eq!(mode(&base), 0o755, "check_dir changed the mode");
        // Another user's open directory is refused, as secure_dir refuses it.
        let theirs = base.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
        if std::os::unix::fs::chown(&theirs, Some(65534), None).is_ok() {
            assert!(matches!(check_dir(&theirs), Err(PrivateDirError::NotOurs { owner: 65534, .. })));
            assert!(matches!(secure_dir(&theirs), Err(PrivateDirError::NotOurs { owner: 65534, .. })));
        }
        // Not writable: only observable when not running as root (root may write anywhere).
        if rustix::process::geteuid().as_raw() != 0 {
            let locked = base.join("locked");
            std::fs::create_dir(&locked).unwrap();
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
            assert!(matches!(check_dir(&locked.join("data")), Err(PrivateDirError::NotWritable { .. })));
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
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
