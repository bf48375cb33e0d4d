//! The one way this tool writes a file: [`write_atomic`] (temp file beside the target, write,
//! sync as the [`Durability`] says, rename), one temp-file name scheme and one sweeper for the
//! temp files a killed writer leaves, and directory and file creation with fixed modes.
//!
//! Temp files are `.<target name>.wp-tmp.<pid>`, in the target's directory: hidden, never
//! mistaken for the target, and told apart per writer, so writers that hold no lock (renders of
//! two worktrees sharing a directory) never collide. A writer that holds the lock of what it
//! writes sweeps every temp file of that target ([`Sweep::All`]: they can only be leftovers);
//! others sweep only those whose process is gone ([`Sweep::DeadWriters`]).
//!
//! Files are created 0644 (0755 for scripts) and directories 0755 whatever the umask: std's
//! defaults (0666 / 0777 less the umask) are world-writable under a umask of 000.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sys::fault;

/// How hard a write tries to survive a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the directory after it: once this returns, the
    /// new content survives a crash (the registry).
    Full,
    /// fsync the file before the rename, not the directory: a crash may bring back the old
    /// file, never half of the new one (rendered files, hooks).
    File,
    /// No fsync; replacing an existing file swaps the two names (Linux
    /// `renameat2(RENAME_EXCHANGE)`) and unlinks the old one, because a plain rename over an
    /// existing file makes ext4 write the new one out at once (`auto_da_alloc`: 3.9 ms for a
    /// 2.4 MB file against 1.0 ms). For copies that a later command rewrites (the backup).
    Lazy,
}

/// The permissions of the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exactly these bits.
    Fixed(u32),
    /// The replaced file's permissions (a `.env` may be 0600 on purpose); 0644 for a new file.
    KeepExisting,
    /// Exactly `file` for the file, and exactly `dir` for a folder made for it (a shared
    /// repository's group-writable, set-group-id folders: [`create_dirs_with`]).
    FixedIn {
        /// The file's bits.
        file: u32,
        /// A missing parent folder's bits.
        dir: u32,
    },
}

impl Mode {
    /// The file's bits, when the mode fixes them.
    pub fn file_bits(self) -> Option<u32> {
        match self {
            Mode::Fixed(m) | Mode::FixedIn { file: m, .. } => Some(m),
            Mode::KeepExisting => None,
        }
    }
}

/// How [`write_atomic`] writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Which syncs to pay for.
    pub durability: Durability,
    /// The file's permissions.
    pub mode: Mode,
    /// Prefix of the crash points (`<label>.temp-written`, `.synced`, `.renamed`).
    pub label: &'a str,
}

/// Which temp files a sweep removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Every temp file of the target: the caller holds the lock every writer of it takes.
    All,
    /// Only those whose writer's process is gone.
    DeadWriters,
}

const TEMP_MARK: &str = ".wp-tmp.";

/// What a stat says of a file: inode, length and modification time to the nanosecond. Two
/// equal stamps are one content when every writer of the file that matters gives it a
/// modification time of its own ([`write_atomic_stamped`]): the machine index keeps the stamp
/// of the registry whose ports it lists, so a later reader trusts the list after one stat
/// instead of reading the registry (a rename keeps inode and times; any other write changes
/// the time, and a hand edit within the same clock tick still gets another inode or length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    /// Inode number.
    pub ino: u64,
    /// Length in bytes.
    pub len: u64,
    /// Modification time: seconds since the epoch, and nanoseconds.
    pub mtime: (i64, u32),
}

impl Stamp {
    /// The stamp of what `meta` describes.
    #[cfg(unix)]
    pub fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec().clamp(0, 999_999_999) as u32),
        }
    }

    /// Whether the file at `path` (following a symlink) is still the one stamped: the same
    /// inode, length and modification time, and its status last changed near that time. The
    /// kernel sets the change time on every write, rename, chmod and `touch`, and no one can
    /// set it back: a hand edit that restores the modification time afterwards still moves
    /// it. Our saves rename the file within the same second they stamp it.
    #[cfg(unix)]
    pub fn still(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = fs::metadata(path) else {
            return false;
        };
        let near = |ctime: i64| (self.mtime.0 - 1..=self.mtime.0 + 1).contains(&ctime);
        Stamp::of(&meta) == *self && near(meta.ctime())
    }

    /// No stamps where there are no inodes: every reader reads the file.
    #[cfg(not(unix))]
    pub fn of(_: &fs::Metadata) -> Stamp {
        Stamp {
            ino: 0,
            len: 0,
            mtime: (0, 0),
        }
    }

    /// No stamps where there are no inodes: every reader reads the file.
    #[cfg(not(unix))]
    pub fn still(&self, _: &Path) -> bool {
        false
    }
}

/// A modification time no other write will give a file: now, to the millisecond, plus a
/// random count of nanoseconds below a millisecond (never zero, so a file system that keeps
/// coarser times shows it lost them). Random from std's hasher keys, seeded by the OS.
fn unique_mtime() -> std::time::SystemTime {
    use std::hash::{BuildHasher, Hasher};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.as_nanos());
    let nonce = 1 + h.finish() % 999_999;
    let ms = Duration::from_millis(now.as_millis() as u64);
    UNIX_EPOCH + ms + Duration::from_nanos(nonce)
}

/// Replace `target` with `bytes` atomically: readers see the old file or the new one, never
/// half of one. Creates missing parent directories (0755). On failure the temp file is removed
/// and `target` is as it was.
pub fn write_atomic(target: &Path, bytes: &[u8], opts: WriteOptions<'_>) -> anyhow::Result<()> {
    write_atomic_from(target, &mut |f| f.write_all(bytes), opts)
}

/// [`write_atomic`] with what `content` writes into the new file: a 2.4 MB registry streamed
/// through a small buffer, or copied from another file by the kernel, instead of first built
/// in fresh memory (600 page faults).
pub fn write_atomic_from(
    target: &Path,
    content: Content<'_>,
    opts: WriteOptions<'_>,
) -> anyhow::Result<()> {
    write_atomic_with(target, content, opts, None, None)
}

/// What writes a new file's content.
pub type Content<'a> = &'a mut dyn FnMut(&mut File) -> io::Result<()>;

/// [`write_atomic`], giving the file a modification time of its own ([`unique_mtime`]) and
/// calling `before_rename` with the new file's [`Stamp`] once it is written and synced, before
/// it takes `target`'s place: what records the stamp elsewhere (the machine index) does so
/// first, so the record is never behind the file. An error there leaves `target` as it was.
/// The stamp is None where the file system keeps coarser times than the one set (it could not
/// tell two writes apart). `while_syncing`, when given, is called with the written file once
/// the disk has been asked to write it and before the sync that waits for it.
pub fn write_atomic_stamped(
    target: &Path,
    content: Content<'_>,
    opts: WriteOptions<'_>,
    before_rename: BeforeRename<'_>,
    while_syncing: Option<WhileSyncing<'_>>,
) -> anyhow::Result<()> {
    write_atomic_with(target, content, opts, Some(before_rename), while_syncing)
}

/// What [`write_atomic_stamped`] calls with the new file's stamp before the rename.
pub type BeforeRename<'a> = &'a mut dyn FnMut(Option<Stamp>) -> anyhow::Result<()>;

/// What [`write_atomic_stamped`] calls with the new file, written but not yet synced, while the
/// disk writes it: work that reads it (a copy of it) overlaps the wait. It keeps its own
/// errors: the write goes on whatever it does.
pub type WhileSyncing<'a> = &'a mut dyn FnMut(&File);

fn write_atomic_with(
    target: &Path,
    content: Content<'_>,
    opts: WriteOptions<'_>,
    mut before_rename: Option<BeforeRename<'_>>,
    while_syncing: Option<WhileSyncing<'_>>,
) -> anyhow::Result<()> {
    let tmp = temp_path(target);
    let label = opts.label;
    let result = (|| -> anyhow::Result<()> {
        let (f, stamped) = write_temp(target, &tmp, content, &opts, before_rename.is_some())?;
        if opts.durability != Durability::Lazy {
            if let Some(work) = while_syncing {
                start_writeback(&f);
                work(&f);
            }
            f.sync_all()?;
        }
        drop(f);
        fault::point(&format!("{label}.synced"));
        if let (Some(call), Some(stamp)) = (before_rename.as_mut(), stamped) {
            call(stamp)?;
        }
        put_in_place(&tmp, target, opts.durability, label)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("could not write {}", target.display()))
}

/// Write `target`'s temp file `tmp` (created, filled, its mode set; not synced). With
/// `stamp`, the file gets a modification time of its own and its [`Stamp`] is returned
/// (None inside when the file system keeps coarser times).
fn write_temp(
    target: &Path,
    tmp: &Path,
    content: Content<'_>,
    opts: &WriteOptions<'_>,
    stamp: bool,
) -> anyhow::Result<(File, Option<Option<Stamp>>)> {
    let dir = parent(target);
    // A shared repository's folder has its bits checked by every write; any other folder is
    // made only when the temp file cannot be for want of it (no mkdir and stat per write).
    if let Mode::FixedIn { .. } = opts.mode {
        create_dirs_for(dir, opts.mode)?;
    }
    let label = opts.label;
    let mode = opts.mode.file_bits().unwrap_or(0o644);
    let mut f = match new_file_with_mode(tmp, mode) {
        // A file at our own name is a dead writer's whose pid we were given again.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            new_file_with_mode(tmp, mode)?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs_for(dir, opts.mode)?;
            new_file_with_mode(tmp, mode)?
        }
        other => other?,
    };
    fault::io_point(&format!("{label}.write"))?;
    content(&mut f)?;
    fault::point(&format!("{label}.temp-written"));
    let mut stamped = None;
    if stamp {
        let set = unique_mtime();
        f.set_modified(set)?;
        let stamp = Stamp::of(&f.metadata()?);
        let kept = set
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.subsec_nanos());
        stamped = Some((kept == Some(stamp.mtime.1)).then_some(stamp));
    }
    // Through the open file (no path to resolve again), and before the fsync, which then
    // makes the mode durable with the content.
    #[cfg(unix)]
    if let Some(m) = opts.mode.file_bits() {
        // The umask may have taken bits a script needs (0755 under umask 077 is 0700).
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(m))?;
    }
    if opts.mode == Mode::KeepExisting
        && let Ok(meta) = fs::metadata(target)
    {
        f.set_permissions(meta.permissions())?;
    }
    Ok((f, stamped))
}

/// Put the written temp file `tmp` in `target`'s place. [`Durability::Lazy`]: by exchanging
/// the two names where the system can (a rename over a file makes ext4 write the new one out
/// at once), then removing the old file the exchange left at `tmp`; else by a rename, and
/// with [`Durability::Full`] the directory synced after it (the rename is durable only once
/// the directory is). An error leaves at `tmp` a file for the caller to remove.
fn put_in_place(tmp: &Path, target: &Path, durability: Durability, label: &str) -> io::Result<()> {
    let exchanged = durability == Durability::Lazy && exchange(tmp, target);
    if !exchanged {
        fs::rename(tmp, target)?;
    }
    if durability == Durability::Full {
        File::open(parent(target))?.sync_all()?;
    }
    fault::point(&format!("{label}.renamed"));
    if exchanged {
        // A crash before this leaves the old file for the next sweep.
        fs::remove_file(tmp)?;
    }
    Ok(())
}

/// Ask the disk to start writing `f`'s dirty pages, without waiting: the sync that follows
/// waits for less. Where there is no such call, nothing (the sync does it all).
fn start_writeback(f: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range on an open descriptor of ours, the whole file, only starting
        // writeback: no memory is passed. Its error is the fsync's to report.
        unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// A file written beside its target, not synced, and not yet in its place
/// ([`stage_lazy`]): [`Staged::commit`] puts it there; dropped uncommitted (or after a commit
/// that failed), what is at its temp name is removed.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    label: String,
    committed: bool,
}

/// Write `target`'s new content into its temp file now, to put it in place later with
/// [`Staged::commit`] ([`Durability::Lazy`]: never synced): a copy of a file made while the
/// disk writes the file, committed once the file is.
pub fn stage_lazy(
    target: &Path,
    content: Content<'_>,
    opts: WriteOptions<'_>,
) -> anyhow::Result<Staged> {
    let tmp = temp_path(target);
    let staged = Staged {
        tmp,
        target: target.to_path_buf(),
        label: opts.label.to_string(),
        committed: false,
    };
    write_temp(target, &staged.tmp, content, &opts, false)
        .with_context(|| format!("could not write {}", target.display()))?;
    fault::point(&format!("{}.synced", opts.label));
    Ok(staged)
}

impl Staged {
    /// Put the staged file in its target's place (readers see the old file or this one).
    pub fn commit(mut self) -> anyhow::Result<()> {
        put_in_place(&self.tmp, &self.target, Durability::Lazy, &self.label)
            .with_context(|| format!("could not write {}", self.target.display()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The directory a file lives in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Where this process writes `target` before renaming it.
pub fn temp_path(target: &Path) -> PathBuf {
    parent(target).join(temp_name(
        target.file_name().unwrap_or_default(),
        std::process::id(),
    ))
}

fn temp_name(name: &OsStr, pid: u32) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(TEMP_MARK);
    s.push(pid.to_string());
    s
}

/// The writer's pid if `file` is a temp file of `target_name` (any target when None).
fn temp_owner(file: &OsStr, target_name: Option<&OsStr>) -> Option<u32> {
    let file = file.as_encoded_bytes();
    let rest = file.strip_prefix(b".")?;
    let at = rest
        .windows(TEMP_MARK.len())
        .rposition(|w| w == TEMP_MARK.as_bytes())?;
    let (name, pid) = (&rest[..at], &rest[at + TEMP_MARK.len()..]);
    if target_name.is_some_and(|t| t.as_encoded_bytes() != name) || name.is_empty() {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// True when `file` is a temp file of `target` (a file name), whoever wrote it.
pub fn is_temp_of(file: &OsStr, target: &OsStr) -> bool {
    temp_owner(file, Some(target)).is_some()
}

/// Remove the temp files of `target_name` in `dir` (of every target when None) that `sweep`
/// says are leftovers. Returns how many it removed; errors are ignored (a sweep is best effort
/// and a later one tries again).
pub fn sweep(dir: &Path, target_name: Option<&OsStr>, sweep: Sweep) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(pid) = temp_owner(&entry.file_name(), target_name) else {
            continue;
        };
        if (sweep == Sweep::All || !super::procs::alive(pid, None))
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Write `bytes` at offset `at` of the existing regular file `path` (never through a
/// symbolic link), cutting what is past `at` first; the file, for the caller to sync
/// (`sync_data`) before anything names what it wrote. A file shorter than `at` is an
/// `UnexpectedEof` error: never filled with zeros up to it.
pub fn write_at(path: &Path, at: u64, bytes: &[u8]) -> io::Result<File> {
    use std::os::unix::fs::FileExt;
    let (file, meta) = open_existing_for_writing(path)?;
    if meta.len() < at {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} is shorter than {at} bytes", path.display()),
        ));
    }
    if meta.len() > at {
        file.set_len(at)?;
    }
    super::fault::io_point("records.append")?;
    file.write_all_at(bytes, at)?;
    super::fault::point("records.appended");
    Ok(file)
}

/// Cut the existing regular file `path` (never through a symbolic link) to `len` bytes if it
/// is longer; never longer, never a sync (what is cut was never committed).
pub fn cut_at(path: &Path, len: u64) -> io::Result<()> {
    let (file, meta) = open_existing_for_writing(path)?;
    if meta.len() > len {
        file.set_len(len)?;
    }
    Ok(())
}

/// The existing regular file `path` opened for writing in place, never through a symbolic
/// link and never blocking (a FIFO in its place); anything but a regular file is an
/// `InvalidData` error that says what it is.
fn open_existing_for_writing(path: &Path) -> io::Result<(File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {}, not a regular file",
                path.display(),
                kind_of(meta.file_type())
            ),
        ));
    }
    Ok((file, meta))
}

/// True when `dir` holds a temp file of one of `targets` (file names): a write in progress,
/// or a killed one. One readdir, however many targets.
pub fn has_temp_files(dir: &Path, targets: &[&OsStr]) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            targets.iter().any(|t| temp_owner(&name, Some(t)).is_some())
        })
    })
}

/// Open `path` for reading without ever blocking (a FIFO in a file's place would otherwise
/// hang until someone writes to it), and only if it is a regular file: anything else is an
/// `InvalidData` error that says what it is. None when there is no such file.
pub fn open_regular(path: &Path) -> io::Result<Option<File>> {
    Ok(open_regular_meta(path)?.map(|(f, _)| f))
}

/// [`open_regular`], with the file's metadata (the one fstat it takes).
pub fn open_regular_meta(path: &Path) -> io::Result<Option<(File, fs::Metadata)>> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NONBLOCK);
    let f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let ty = meta.file_type();
    if ty.is_file() {
        return Ok(Some((f, meta)));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is {}, not a regular file", path.display(), kind_of(ty)),
    ))
}

/// What a file type is, for messages.
pub fn kind_of(ty: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_fifo() {
            return "a FIFO";
        }
        if ty.is_socket() {
            return "a socket";
        }
        if ty.is_block_device() || ty.is_char_device() {
            return "a device";
        }
    }
    if ty.is_dir() {
        "a directory"
    } else if ty.is_symlink() {
        "a symlink"
    } else if ty.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The bytes of the regular file at `path` (see [`open_regular`]); None when it is missing.
pub fn read_regular(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let Some((f, meta)) = open_regular_meta(path)? else {
        return Ok(None);
    };
    read_all(f, meta.len()).map(Some)
}

/// All of `f`, which its metadata said is `len` bytes long (one allocation when it still is).
fn read_all(mut f: File, len: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len as usize + 1);
    io::Read::read_to_end(&mut f, &mut bytes)?;
    Ok(bytes)
}

/// Files from this size on are mapped by [`read_mapped_stamped`], not read: reading a
/// 2.4 MB registry (10,000 worktrees) into fresh memory cost 2.7-3.5 ms here, nearly all of
/// it page faults on the new buffer; mapping the page cache's pages, 0.25-0.45 ms. Smaller
/// files (every everyday registry) are read as before.
pub const MAP_FROM: u64 = 512 * 1024;

/// Whether this process maps large files: see [`never_map`].
static MAPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// From now on, read large files instead of mapping them, in this process. For long-lived
/// servers (the proxy, the MCP server): a foreign program that truncates a mapped file in
/// place kills its reader (SIGBUS, see [`Mapping`]); a command dies before it writes
/// anything, but a server would stop serving. Read, such a file is a torn read, which the
/// registry's checks refuse.
pub fn never_map() {
    MAPPING.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// True when a file of `len` bytes is to be mapped.
fn maps(len: u64) -> bool {
    len >= MAP_FROM && MAPPING.load(std::sync::atomic::Ordering::Relaxed)
}

/// A file's bytes: read into memory, or mapped ([`MAP_FROM`]).
#[derive(Debug)]
pub enum Bytes {
    /// Read into memory.
    Read(Vec<u8>),
    /// Mapped read-only.
    Mapped(Mapping),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Read(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes::Read(v)
    }
}

/// A whole regular file mapped read-only and private. This tool never changes a file it
/// maps in place (every writer writes a temp file and renames it over the old name, whose
/// mapped inode stays as it was); a process that truncates the file in place while it is
/// mapped makes a later access fault (SIGBUS), which ends this process before it writes
/// anything taken from the mapping, as a torn read of such a file must.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// The mapping is read-only and owned: shared reads from any thread are plain memory reads.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `f` (its whole length, not zero).
    #[cfg(unix)]
    fn of(f: &File, len: usize) -> io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // SAFETY: a new private read-only mapping of an open file; the pointer is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len })
    }
}

impl std::ops::Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable at `ptr` until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `of`, which nothing borrows any more.
        #[cfg(unix)]
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The bytes of `f`, `len` long: mapped from [`MAP_FROM`] bytes on (falling back to a read
/// where the file system cannot map), else read.
fn bytes_of(f: File, len: u64) -> io::Result<Bytes> {
    match mapped(&f, len) {
        Some(map) => Ok(map),
        None => read_all(f, len).map(Bytes::Read),
    }
}

/// The first `len` bytes of `f` mapped, from [`MAP_FROM`] bytes on; None when they are to be
/// read instead (fewer, mapping turned off, or a file system that cannot map).
fn mapped(f: &File, len: u64) -> Option<Bytes> {
    #[cfg(unix)]
    if maps(len)
        && let Ok(len) = usize::try_from(len)
        && let Ok(map) = Mapping::of(f, len)
    {
        return Some(Bytes::Mapped(map));
    }
    #[cfg(not(unix))]
    let _ = (f, len);
    None
}

/// The first `len` bytes of the regular file `path` (None when there is none; an
/// `UnexpectedEof` error when it is shorter), mapped from [`MAP_FROM`] bytes on as
/// [`read_mapped_stamped`] maps. What is past `len` may change meanwhile (a records file's
/// next append, `registry/apart.rs`); what is before it must not, and no writer of this tool
/// changes it (one that cut it would make a mapped reader fault, as for [`Mapping`]).
pub fn read_prefix(path: &Path, len: u64) -> io::Result<Option<Bytes>> {
    let Some((f, meta)) = open_regular_meta(path)? else {
        return Ok(None);
    };
    let short = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} is shorter than {len} bytes", path.display()),
        )
    };
    if meta.len() < len {
        return Err(short());
    }
    if let Some(map) = mapped(&f, len) {
        return Ok(Some(map));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).map_err(|_| short())?);
    io::Read::read_to_end(&mut io::Read::take(f, len), &mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(short());
    }
    Ok(Some(Bytes::Read(bytes)))
}

/// A file's [`Bytes`], checked once to be UTF-8 text.
#[derive(Debug)]
pub struct FileText(Bytes);

impl FileText {
    /// The text of `bytes`, or where they are not UTF-8.
    pub fn new(bytes: Bytes) -> Result<FileText, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(FileText(bytes))
    }

    /// True when the text is a mapping of its file (which keeps the file's inode), not a copy.
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Bytes::Mapped(_))
    }
}

impl From<String> for FileText {
    fn from(text: String) -> FileText {
        FileText(Bytes::Read(text.into_bytes()))
    }
}

impl std::ops::Deref for FileText {
    type Target = str;
    fn deref(&self) -> &str {
        // SAFETY: checked in `new` (or a String's), and the bytes never change.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// [`read_regular`], large files mapped instead of read ([`Bytes`]), with the [`Stamp`] of
/// the file the bytes came from (of the open file: the stamp and the bytes are of one file,
/// whatever renames happen meanwhile).
pub fn read_mapped_stamped(path: &Path) -> io::Result<Option<(Bytes, Stamp)>> {
    let Some((f, meta)) = open_regular_meta(path)? else {
        return Ok(None);
    };
    Ok(Some((bytes_of(f, meta.len())?, Stamp::of(&meta))))
}

/// True when the file at `path` holds exactly `bytes`, compared in 64 KiB chunks (no second
/// copy of a large file in memory; from [`MAP_FROM`] bytes on, mapped); false when it
/// differs, does not exist, or is not a regular file.
pub fn same_content(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    use std::io::Read;
    let mut f = match open_regular(path) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    #[cfg(unix)]
    if maps(len)
        && let Ok(map) = Mapping::of(&f, bytes.len())
    {
        return Ok(*map == *bytes);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(at == bytes.len());
        }
        if bytes.get(at..at + n) != Some(&buf[..n]) {
            return Ok(false);
        }
        at += n;
    }
}

/// A directory only its owner may enter (0700: the state dir, whose index lists the user's
/// repositories and lease command lines), its parents made 0755 as needed. One that exists
/// is left as it is (a shared state dir may be group-accessible on purpose).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// The folder `dir` of a file made with `mode`, and its parents: a shared repository's
/// ([`Mode::FixedIn`]) with its bits ([`create_dirs_with`]), any other as [`create_dirs`]
/// makes it. The error names the folder.
pub fn create_dirs_for(dir: &Path, mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::FixedIn { dir: bits, .. } => create_dirs_with(dir, bits),
        _ => create_dirs(dir),
    }
    .with_context(|| format!("could not create {}", dir.display()))
}

/// `create_dir_all`, `path` itself made with exactly `mode` whatever the umask (a shared
/// repository's folder: group-writable, set-group-id). One that exists and is ours gets the
/// bits of `mode` it lacks (a folder made before the repository was shared); another user's
/// is left as it is.
pub fn create_dirs_with(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let made = !path.is_dir();
        if made {
            create_dirs(path)?;
        }
        let meta = fs::metadata(path)?;
        let have = meta.mode() & 0o7777;
        let mine = meta.uid() == rustix::process::geteuid().as_raw();
        if mine && (made || have & mode != mode) {
            let want = if made { mode } else { have | mode };
            fs::set_permissions(path, fs::Permissions::from_mode(want))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        create_dirs(path)
    }
}

/// True when `dir` is a folder its group may write (shared on purpose).
pub fn group_writable(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o020 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

/// `create_dir_all` with 0755 for what it creates.
pub fn create_dirs(path: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o755);
    b.create(path)
}

/// A new file (never an existing one), 0644: readable by all, writable by its owner only.
pub fn new_file(path: &Path) -> io::Result<File> {
    new_file_with_mode(path, 0o644)
}

/// True when `dir`, or the nearest existing directory above it, is writable by us.
pub fn writable(dir: &Path) -> bool {
    let existing = dir.ancestors().find(|d| d.exists());
    existing.is_some_and(|d| rustix::fs::access(d, rustix::fs::Access::WRITE_OK).is_ok())
}

/// A log file opened for appending (created 0644 when missing, whatever the umask).
pub fn open_log(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o644);
    opts.open(path)
}

/// A file of ours opened to append to (and to read: an append looks at the last byte),
/// created with `mode` (before the umask) when missing. Never through a symbolic link (ELOOP):
/// what the tool appends to under a git dir is a file it made there, never one elsewhere.
pub fn open_appending(path: &Path, mode: u32) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode).custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
}

fn new_file_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    // Readable too: what a writer does while the new file syncs may read it (a backup copied
    // from it by the kernel).
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
}

/// Swap two files' names atomically; false when the system or file system cannot, or `b` does
/// not exist yet.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn exchange(a: &Path, b: &Path) -> bool {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn opts(durability: Durability, mode: Mode) -> WriteOptions<'static> {
        WriteOptions {
            durability,
            mode,
            label: "test",
        }
    }

    /// A large file is mapped, a small one read; either way the bytes are the file's, and
    /// a mapping keeps the bytes of the file it was made from when a writer renames another
    /// file over its name (every writer of this tool does).
    #[test]
    fn large_files_are_mapped_and_keep_their_bytes_across_a_rename_over_them() {
        let dir = tempfile::tempdir().unwrap();
        let (big, small) = (dir.path().join("big"), dir.path().join("small"));
        let text: Vec<u8> = (0..MAP_FROM as usize + 7)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        fs::write(&big, &text).unwrap();
        fs::write(&small, b"{}").unwrap();
        let (mapped, _) = read_mapped_stamped(&big).unwrap().unwrap();
        assert!(matches!(mapped, Bytes::Mapped(_)));
        assert_eq!(&*mapped, &text[..]);
        let (read, _) = read_mapped_stamped(&small).unwrap().unwrap();
        assert!(matches!(read, Bytes::Read(_)));
        assert_eq!(&*read, b"{}");
        assert!(same_content(&big, &text).unwrap());
        let mut other = text.clone();
        *other.last_mut().unwrap() = b'!';
        assert!(!same_content(&big, &other).unwrap());
        let new = dir.path().join("new");
        fs::write(&new, &other).unwrap();
        fs::rename(&new, &big).unwrap();
        assert_eq!(&*mapped, &text[..]);
        assert!(same_content(&big, &other).unwrap());
        let text = FileText::new(mapped).unwrap();
        assert_eq!(text.len(), MAP_FROM as usize + 7);
        assert!(
            read_mapped_stamped(&dir.path().join("gone"))
                .unwrap()
                .is_none()
        );
        let bad: Bytes = vec![b'a', 0xff].into();
        assert!(FileText::new(bad).is_err());
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_durability_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/f.json");
        for d in [Durability::Full, Durability::File, Durability::Lazy] {
            write_atomic(&target, b"one", opts(d, Mode::KeepExisting)).unwrap();
            write_atomic(&target, b"two", opts(d, Mode::KeepExisting)).unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"two");
            assert_eq!(names(&dir.path().join("sub")), ["f.json"]);
        }
    }

    #[test]
    fn modes_are_fixed_whatever_the_umask_or_kept_from_the_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = rustix::process::umask(rustix::fs::Mode::empty());
        let script = dir.path().join("hook");
        write_atomic(
            &script,
            b"#!/bin/sh\n",
            opts(Durability::File, Mode::Fixed(0o755)),
        )
        .unwrap();
        let env = dir.path().join(".env");
        write_atomic(&env, b"A=1\n", opts(Durability::File, Mode::KeepExisting)).unwrap();
        rustix::process::umask(old);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&script), 0o755);
        assert_eq!(mode(&env), 0o644);
        fs::set_permissions(&env, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&env, b"A=2\n", opts(Durability::File, Mode::KeepExisting)).unwrap();
        assert_eq!(mode(&env), 0o600);
    }

    /// An append at the committed length cuts what a save that never committed left past it,
    /// and a prefix read gives exactly the bytes asked for; a file shorter than the committed
    /// length is refused, never filled with zeros, and left as it was.
    #[test]
    fn writes_at_a_length_cut_past_it_and_never_fill_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records-1.jsonl");
        fs::write(&path, "committed\nnever committed\n").unwrap();
        let f = write_at(&path, 10, b"next\n").unwrap();
        f.sync_data().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"committed\nnext\n");
        assert_eq!(&*read_prefix(&path, 10).unwrap().unwrap(), b"committed\n");
        assert_eq!(
            write_at(&path, 100, b"x").unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            read_prefix(&path, 100).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(fs::read(&path).unwrap(), b"committed\nnext\n");
        cut_at(&path, 10).unwrap();
        cut_at(&path, 50).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"committed\n");
        assert!(read_prefix(&dir.path().join("none"), 1).unwrap().is_none());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(write_at(&link, 10, b"x").is_err() && cut_at(&link, 0).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"committed\n");
    }

    #[test]
    fn sweeps_tell_dead_writers_from_live_ones_and_targets_apart() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dead = 0x7fff_fff0_u32; // above pid_max: no such process
        let live = std::process::id();
        for (name, pid) in [("a", dead), ("a", live), ("b", dead), (".env", dead)] {
            fs::write(d.join(temp_name(OsStr::new(name), pid)), b"x").unwrap();
        }
        fs::write(d.join("a"), b"target").unwrap();
        fs::write(d.join(".wp-tmp.1"), b"not ours: no target name").unwrap();
        assert!(has_temp_files(d, &[OsStr::new("c"), OsStr::new("a")]));
        assert!(!has_temp_files(d, &[OsStr::new("c")]));
        assert_eq!(sweep(d, Some(OsStr::new("a")), Sweep::DeadWriters), 1);
        assert_eq!(sweep(d, Some(OsStr::new("a")), Sweep::All), 1);
        assert!(!has_temp_files(d, &[OsStr::new("a")]));
        assert_eq!(sweep(d, None, Sweep::DeadWriters), 2);
        assert_eq!(names(d), [".wp-tmp.1", "a"]);
    }

    #[test]
    fn temp_names_round_trip_any_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(b"caf\xe9.wp-tmp.x");
        assert_eq!(temp_owner(&temp_name(name, 42), Some(name)), Some(42));
        assert_eq!(
            temp_owner(&temp_name(name, 42), Some(OsStr::new("caf"))),
            None
        );
        assert_eq!(temp_owner(OsStr::new(".a.wp-tmp.x"), None), None);
    }

    #[test]
    fn same_content_compares_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &big).unwrap();
        assert!(same_content(&p, &big).unwrap());
        let mut other = big.clone();
        other[150_000] ^= 1;
        assert!(!same_content(&p, &other).unwrap());
        assert!(!same_content(&p, &big[..1000]).unwrap());
        assert!(!same_content(&dir.path().join("none"), b"").unwrap());
    }

    #[test]
    fn a_dead_writers_temp_file_at_our_name_is_replaced_and_a_missing_folder_made() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        fs::write(temp_path(&target), b"a dead writer's").unwrap();
        write_atomic(&target, b"new", opts(Durability::Full, Mode::Fixed(0o644))).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!temp_path(&target).exists());
        // The folder is made only when the temp file cannot be for want of it.
        let deep = dir.path().join("a/b/t");
        write_atomic(&deep, b"deep", opts(Durability::Lazy, Mode::Fixed(0o644))).unwrap();
        assert_eq!(fs::read(&deep).unwrap(), b"deep");
        let lock = dir.path().join("c/d/x.lock");
        crate::sys::lock::acquire(&lock, std::time::Duration::from_secs(1), &|_| {}).unwrap();
        assert!(lock.is_file());
    }

    #[test]
    fn a_failed_write_leaves_the_target_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        fs::write(&target, b"old").unwrap();
        fs::create_dir(temp_path(&target)).unwrap();
        fs::write(temp_path(&target).join("x"), b"").unwrap();
        assert!(write_atomic(&target, b"new", opts(Durability::Full, Mode::KeepExisting)).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"old");
    }
    #[test]
    fn a_stamp_names_one_save_and_no_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ports.json");
        let opts = opts(Durability::Full, Mode::Fixed(0o644));
        let mut seen = None;
        write_atomic_stamped(
            &target,
            &mut |f| f.write_all(b"{\"a\":1}"),
            opts,
            &mut |s| {
                // Called before the rename: the target does not exist yet.
                assert!(!target.exists());
                seen = s;
                Ok(())
            },
            None,
        )
        .unwrap();
        let stamp = seen.expect("this file system keeps nanoseconds");
        assert!(stamp.still(&target), "the renamed file is the stamped one");
        // The same bytes saved again: another save, another stamp.
        let mut again = None;
        write_atomic_stamped(
            &target,
            &mut |f| f.write_all(b"{\"a\":1}"),
            opts,
            &mut |s| {
                again = s;
                Ok(())
            },
            None,
        )
        .unwrap();
        assert_ne!(again, Some(stamp));
        assert!(!stamp.still(&target));
        let again = again.unwrap();
        // Written in place with the same length: another modification time.
        fs::write(&target, b"{\"a\":2}").unwrap();
        assert!(!again.still(&target));
        assert!(!again.still(&dir.path().join("missing")));
    }

    /// What runs while a new file syncs reads the file as written, before the file takes its
    /// place; a copy staged then is put in place only by its commit, and one dropped
    /// uncommitted leaves nothing behind.
    #[test]
    fn a_copy_staged_while_a_file_syncs_takes_its_place_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (target, backup) = (
            dir.path().join("ports.json"),
            dir.path().join("ports.json.bak"),
        );
        fs::write(&backup, b"old").unwrap();
        let lazy = opts(Durability::Lazy, Mode::Fixed(0o644));
        let mut staged = None;
        write_atomic_stamped(
            &target,
            &mut |f| f.write_all(b"new"),
            opts(Durability::Full, Mode::Fixed(0o644)),
            &mut |_| Ok(()),
            Some(&mut |f: &File| {
                assert!(!target.exists(), "called before the rename");
                let copy = &mut |b: &mut File| {
                    let mut from = f;
                    io::Seek::seek(&mut from, io::SeekFrom::Start(0))?;
                    io::copy(&mut from, b).map(|_| ())
                };
                staged = Some(stage_lazy(&backup, copy, lazy).unwrap());
            }),
        )
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(
            fs::read(&backup).unwrap(),
            b"old",
            "staged, not yet in place"
        );
        staged.expect("called while syncing").commit().unwrap();
        assert_eq!(fs::read(&backup).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["ports.json", "ports.json.bak"]);
        let dropped = stage_lazy(&backup, &mut |f| f.write_all(b"newer"), lazy).unwrap();
        assert_eq!(names(dir.path()).len(), 3, "its temp file");
        drop(dropped);
        assert_eq!(names(dir.path()), ["ports.json", "ports.json.bak"]);
        assert_eq!(fs::read(&backup).unwrap(), b"new");
    }

    #[test]
    fn an_error_before_the_rename_leaves_the_target_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        fs::write(&target, b"old").unwrap();
        let err = write_atomic_stamped(
            &target,
            &mut |f| f.write_all(b"new"),
            opts(Durability::Full, Mode::Fixed(0o644)),
            &mut |_| anyhow::bail!("the index could not be saved"),
            None,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("the index could not be saved"),
            "{err:#}"
        );
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), vec!["t".to_string()]);
    }
}
