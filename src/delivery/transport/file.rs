//! `file:///dir` routes: one file per message, holding the message's bytes exactly as
//! received, named by the route's `[route.file] name` template
//! ([`crate::config::file_name::FileName`]).
//!
//! One attempt: render the name; create missing directories (0700); write the bytes to a
//! hidden temporary file beside the final one (`.hl7d-tmp-…`, created new, 0600), fsync
//! it; move it to its name without ever replacing a file (`renameat2(RENAME_NOREPLACE)` on
//! Linux, a hard link elsewhere or where the file system lacks it); fsync the directory
//! (and the parent of each directory created). The temporary file is removed on every
//! path out, so the directory holds only delivered messages.
//!
//! | what happened | outcome |
//! |---|---|
//! | written and synced | delivered |
//! | the name exists holding the same bytes (a resend after a crash) | delivered |
//! | the name exists holding other bytes | parked: a file is never overwritten |
//! | any I/O error (disk full, permission, …) | retry (`io`) |
//!
//! A crash can leave a temporary file behind; the first time a process builds a transport
//! for a directory, a background thread removes the `.hl7d-tmp-` files of earlier
//! processes in it (down to the template's depth).

use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tracing::{debug, info, warn};

use crate::config::file_name::{FileName, FileNameFields};
use crate::delivery::{BoxFuture, Outbound, Outcome, RetryReason, Transport};
use crate::private_files::{self, FILE_MODE};

/// The start of every temporary file's name.
pub const TEMP_PREFIX: &str = ".hl7d-tmp-";

/// Delivers into one directory; see the module documentation.
#[derive(Debug, Clone)]
pub struct FileTransport {
    inner: Arc<Target>,
}

#[derive(Debug)]
struct Target {
    dir: PathBuf,
    name: FileName,
}

impl FileTransport {
    /// A transport writing under `dir` with names from `name`. Starts the removal of
    /// temporary files that earlier processes left in `dir` (once per directory and
    /// process, in the background).
    pub fn new(dir: &Path, name: FileName) -> FileTransport {
        sweep_once(dir, name.render(&sample()).len());
        FileTransport { inner: Arc::new(Target { dir: dir.to_path_buf(), name }) }
    }

    /// What `serve` would find when writing under `dir`, without creating anything: an
    /// existing directory this process can create files in, or a missing one whose nearest
    /// existing parent it can create directories in.
    pub fn check(dir: &Path) -> Result<(), String> {
        let mut at = dir;
        loop {
            match std::fs::metadata(at) {
                Ok(metadata) if metadata.is_dir() => {
                    return private_files::can_create_in(at).map_err(|e| {
                        format!("{}: this process cannot create files here: {e}", at.display())
                    });
                }
                Ok(_) => return Err(format!("{}: not a directory", at.display())),
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    match at.parent() {
                        Some(parent) => at = parent,
                        None => return Err(format!("{}: {e}", dir.display())),
                    }
                }
                Err(e) => return Err(format!("{}: {e}", at.display())),
            }
        }
    }
}

impl Transport for FileTransport {
    fn deliver<'a>(&'a mut self, message: &'a Outbound) -> BoxFuture<'a, Outcome> {
        let target = self.inner.clone();
        let message = message.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || target.write(&message)).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Retry {
                    reason: RetryReason::Io,
                    error: format!("file write task failed: {e}"),
                    response: None,
                    retry_after: None,
                },
            }
        })
    }
}

impl Target {
    fn write(&self, message: &Outbound) -> Outcome {
        let components = self.name.render(&FileNameFields {
            id: message.id,
            control_id: &message.control_id,
            listener: &message.listener,
            message_type: &message.message_type,
            received_at: message.received_at,
        });
        let mut path = self.dir.clone();
        path.extend(&components);
        let relative = components.join("/");
        match self.write_new(&path, &message.raw) {
            Ok(Written::New) => Outcome::Delivered { response: None },
            Ok(Written::SameBytes) => {
                debug!(file = %relative, "file already there with the same bytes: delivered before");
                Outcome::Delivered { response: Some("file already there with the same bytes".to_owned()) }
            }
            Ok(Written::OtherBytes) => Outcome::Park {
                error: format!("{relative} exists with other content; a file is never overwritten"),
                response: None,
            },
            Err(e) => Outcome::Retry {
                reason: RetryReason::Io,
                error: format!("{relative}: {e}"),
                response: None,
                retry_after: None,
            },
        }
    }

    fn write_new(&self, path: &Path, bytes: &[u8]) -> io::Result<Written> {
        // `render` gives at least one component, so there is a parent.
        let parent = path.parent().unwrap_or(&self.dir);
        create_dirs(parent)?;
        let temp = parent.join(temp_name());
        let result = write_synced(&temp, bytes).and_then(|()| move_into_place(&temp, path));
        // Gone when it was moved; on every other path out, removed here.
        match std::fs::remove_file(&temp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(file = %temp.display(), error = %e, "cannot remove a temporary file"),
        }
        match result? {
            Moved::Done => {
                sync_dir(parent)?;
                Ok(Written::New)
            }
            Moved::Exists => {
                if same_contents(path, bytes)? {
                    Ok(Written::SameBytes)
                } else {
                    Ok(Written::OtherBytes)
                }
            }
        }
    }
}

enum Written {
    New,
    SameBytes,
    OtherBytes,
}

enum Moved {
    Done,
    Exists,
}

/// Creates `dir` and its missing parents (0700), syncing the parent of each one created so
/// that the new entries are on disk before a file in them is counted delivered.
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode_private().create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

trait PrivateDirBuilder {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateDirBuilder for std::fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            self.mode(private_files::DIR_MODE);
        }
        self
    }
}

fn write_synced(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = private_files::open_for_write(temp, FILE_MODE, false)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Moves `temp` to `path` unless `path` exists.
fn move_into_place(temp: &Path, path: &Path) -> io::Result<Moved> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, temp, CWD, path, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(Moved::Done),
            Err(rustix::io::Errno::EXIST) => return Ok(Moved::Exists),
            // A file system without RENAME_NOREPLACE: a hard link does the same.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS | rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    match std::fs::hard_link(temp, path) {
        // The temporary name is removed by the caller.
        Ok(()) => Ok(Moved::Done),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Moved::Exists),
        Err(e) => Err(e),
    }
}

fn same_contents(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let mut file = File::open(path)?;
    if file.metadata()?.len() != bytes.len() as u64 {
        return Ok(false);
    }
    let mut existing = Vec::with_capacity(bytes.len());
    file.read_to_end(&mut existing)?;
    Ok(existing == bytes)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// This process's temporary-file token: random per process, so that a sweep never takes a
/// file this process is writing (a pid would be reused, e.g. always 1 in a container).
static PROCESS_TOKEN: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
});

fn temp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{TEMP_PREFIX}{}-{}", *PROCESS_TOKEN, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Directories swept by this process.
static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn sweep_once(dir: &Path, depth: usize) {
    let mut swept = SWEPT.lock().unwrap_or_else(PoisonError::into_inner);
    if !swept.get_or_insert_with(HashSet::new).insert(dir.to_path_buf()) {
        return;
    }
    drop(swept);
    let dir = dir.to_path_buf();
    let spawned = std::thread::Builder::new().name("hl7d-file-sweep".into()).spawn(move || {
        let removed = sweep(&dir, depth);
        if removed > 0 {
            info!(dir = %dir.display(), removed, "removed temporary files an earlier run left behind");
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the temporary-file sweep");
    }
}

/// Removes other processes' temporary files in `dir` and its subdirectories down to
/// `depth` levels (the template's components: the file is in the last one).
fn sweep(dir: &Path, depth: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let ours = format!("{TEMP_PREFIX}{}-", *PROCESS_TOKEN);
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_file() && name.starts_with(TEMP_PREFIX) && !name.starts_with(&ours) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    warn!(file = %entry.path().display(), error = %e, "cannot remove a leftover temporary file")
                }
            }
        } else if kind.is_dir() && depth > 1 && !name.starts_with('.') {
            removed += sweep(&entry.path(), depth - 1);
        }
    }
    removed
}

/// Any values: only the number of components matters.
fn sample() -> FileNameFields<'static> {
    FileNameFields {
        id: 0,
        control_id: "",
        listener: "",
        message_type: "",
        received_at: std::time::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;
    use hl7_proto::charset::Charset;

    use super::*;

    fn message(id: i64, raw: &'static [u8]) -> Outbound {
        Outbound {
            id,
            listener: Arc::from("lab"),
            control_id: format!("C{id}"),
            message_type: "ADT^A01".into(),
            charset: Charset::Utf8,
            // 2026-11-04 15:30:07 UTC
            received_at: UNIX_EPOCH + Duration::from_secs(1_793_806_207),
            raw: Bytes::from_static(raw),
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in walk(dir) {
            out.push(entry.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
        out.sort();
        out
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                out.extend(walk(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
        out
    }

    #[tokio::test]
    async fn one_file_per_message_with_the_bytes_as_received_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let name = FileName::parse(crate::config::DEFAULT_FILE_NAME).unwrap();
        let mut transport = FileTransport::new(&dir, name);
        let raw: &[u8] = b"MSH|^~\\&|A|B|||x||ADT^A01|C1|P|2.5\rPID|1||\xe9\r";
        assert_eq!(transport.deliver(&message(1, raw)).await, Outcome::Delivered { response: None });
        assert_eq!(transport.deliver(&message(2, b"MSH|two")).await, Outcome::Delivered { response: None });
        assert_eq!(files(&dir), ["20261104/000000000001-C1.hl7", "20261104/000000000002-C2.hl7"]);
        assert_eq!(std::fs::read(dir.join("20261104/000000000001-C1.hl7")).unwrap(), raw);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("20261104")), 0o700);
            assert_eq!(mode(&dir.join("20261104/000000000001-C1.hl7")), 0o600);
        }

        // A resend after a crash: same bytes, delivered, still one file.
        let again = transport.deliver(&message(1, raw)).await;
        assert!(matches!(again, Outcome::Delivered { response: Some(_) }), "{again:?}");
        // Other bytes under the same name: parked, the file untouched.
        let other = transport.deliver(&message(1, b"MSH|different")).await;
        let Outcome::Park { error, .. } = other else { panic!("{other:?}") };
        assert!(error.contains("20261104/000000000001-C1.hl7 exists with other content"), "{error}");
        assert_eq!(std::fs::read(dir.join("20261104/000000000001-C1.hl7")).unwrap(), raw);
        assert_eq!(files(&dir).len(), 2, "no temporary file left: {:?}", files(&dir));
    }

    /// An I/O error after the temporary file was written (its name is taken by a symbolic
    /// link to itself, which cannot be opened to compare): retried, and the temporary file
    /// is gone. A directory in the way is something a resend cannot fix: parked.
    #[cfg(unix)]
    #[tokio::test]
    async fn io_errors_retry_and_leave_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("7.hl7", dir.join("7.hl7")).unwrap();
        std::fs::create_dir(dir.join("8.hl7")).unwrap();
        let mut transport = FileTransport::new(&dir, FileName::parse("{id}.hl7").unwrap());
        let outcome = transport.deliver(&message(7, b"MSH|x")).await;
        let Outcome::Retry { reason: RetryReason::Io, error, .. } = outcome else { panic!("{outcome:?}") };
        assert!(error.starts_with("7.hl7: "), "{error}");
        let outcome = transport.deliver(&message(8, b"MSH|x")).await;
        assert!(matches!(outcome, Outcome::Park { .. }), "{outcome:?}");
        let mut left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        left.sort();
        assert_eq!(left, ["7.hl7", "8.hl7"], "only what was in the way");
    }

    #[tokio::test]
    async fn a_failed_write_removes_its_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dirs");
        // A file where the template wants a directory: creating it fails after the
        // temporary file of another message was written and moved.
        let mut transport = FileTransport::new(&dir, FileName::parse("{control_id}/{id}.hl7").unwrap());
        assert_eq!(transport.deliver(&message(1, b"MSH|1")).await, Outcome::Delivered { response: None });
        std::fs::write(dir.join("C2"), b"in the way").unwrap();
        let outcome = transport.deliver(&message(2, b"MSH|2")).await;
        assert!(matches!(outcome, Outcome::Retry { reason: RetryReason::Io, .. }), "{outcome:?}");
        assert_eq!(files(&dir), ["C1/1.hl7", "C2"]);
    }

    #[test]
    fn the_sweep_removes_other_runs_temporary_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("20261104")).unwrap();
        std::fs::write(dir.join(".hl7d-tmp-0123456789abcdef-4"), b"").unwrap();
        std::fs::write(dir.join("20261104/.hl7d-tmp-0123456789abcdef-5"), b"").unwrap();
        std::fs::write(dir.join("20261104/1.hl7"), b"").unwrap();
        let ours = dir.join(format!("20261104/{}", temp_name()));
        std::fs::write(&ours, b"").unwrap();
        std::fs::write(dir.join(".other-hidden"), b"").unwrap();
        assert_eq!(sweep(dir, 2), 2);
        let ours = ours.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
        let mut expected = vec![".other-hidden".to_owned(), "20261104/1.hl7".to_owned(), ours];
        expected.sort();
        assert_eq!(files(dir), expected);
        assert_eq!(sweep(dir, 1), 0);
    }

    #[test]
    fn check_says_whether_files_can_be_made_without_making_any() {
        let tmp = tempfile::tempdir().unwrap();
        FileTransport::check(&tmp.path().join("a/b/c")).unwrap();
        assert!(!tmp.path().join("a").exists());
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        let error = FileTransport::check(&tmp.path().join("file/sub")).unwrap_err();
        assert!(error.ends_with("not a directory"), "{error}");
    }
}
