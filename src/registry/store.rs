//! The registry's files: `<common-dir>/worktree-registry/{ports.json, ports.json.bak,
//! ports.lock, history.jsonl}`, and `records-<generation>.jsonl` where the records are kept
//! apart ([`super::apart`]). Loads (lock-free and locked), recovery, save. Reads and
//! writes only files inside `worktree-registry/`; never prints (warnings are returned to the
//! caller).
//!
//! Protocol (design.md "Locking and writing the registry"):
//! - writers lock `ports.lock` ([`crate::sys::lock`]), a file that is never renamed or deleted;
//! - under the lock: sweep temp files (only lock holders write them, so any found are a dead
//!   writer's), read + validate, recover a damaged file from `ports.json.bak` (keeping the
//!   damaged one as `ports.json.corrupt-<ts>`), refuse when both are bad: starting empty over a
//!   damaged file would hand ports out twice;
//! - save = [`fsio::write_atomic`] with [`Durability::Full`], then the same bytes to the backup
//!   with [`Durability::Lazy`], so the backup is always the last committed state;
//! - with the records apart, the lines a save changed are appended to their file (or the
//!   records written whole into the next generation) and synced before `ports.json`, which
//!   names the committed length, is renamed into place: bytes past that length are a save
//!   that never committed, never read, cut by the next locked load or save;
//! - readers take no lock: a rename gives them the old or the new file, never half of one;
//! - what happened is appended to `history.jsonl` once the save that did it is committed
//!   (a log: no fsync, cut to its newest [`HISTORY_KEEP`] bytes past [`HISTORY_MAX`]).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::apart::{self, Apart};
use super::codec::parse_owned;
use super::{Problem, Registry, VERSION};
use crate::model::clock::timestamp_for_file;
use crate::model::error::{Code, Details, Error, NewerRegistry, RegistryDamage};
use crate::model::sharing::Sharing;
use crate::sys::fsio::{self, Durability, FileText, Mode, Stamp, WriteOptions};
use crate::sys::lock::{self, FileLock};

const FILE: &str = "ports.json";
const BACKUP: &str = "ports.json.bak";
const HISTORY: &str = "history.jsonl";
/// `history.jsonl` past this size is cut to its newest [`HISTORY_KEEP`] bytes (whole lines)
/// by the append that would take it further: about 20,000 entries, one read every 10,000.
pub const HISTORY_MAX: u64 = 2 << 20;
/// What a cut keeps of `history.jsonl`.
pub const HISTORY_KEEP: usize = 1 << 20;

/// The files of one repository's registry.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<common-dir>/worktree-registry`.
    pub dir: PathBuf,
    /// `ports.json`.
    pub file: PathBuf,
    /// `ports.json.bak`: the last committed state.
    pub backup: PathBuf,
    /// `ports.lock`: locked by writers, never renamed.
    pub lock: PathBuf,
    /// `history.jsonl`: what happened, one JSON object a line, oldest first.
    pub history: PathBuf,
    /// The repository's `core.sharedRepository`: the modes of what is made here.
    pub sharing: Sharing,
}

impl Paths {
    /// The registry of the repository whose common dir is `common_dir`.
    pub fn new(common_dir: &Path) -> Paths {
        let dir = common_dir.join("worktree-registry");
        Paths {
            file: dir.join(FILE),
            backup: dir.join(BACKUP),
            lock: dir.join("ports.lock"),
            history: dir.join(HISTORY),
            dir,
            sharing: Sharing::Private,
        }
    }

    /// How the registry's files are written ([`mode_for`]).
    pub fn mode(&self) -> Mode {
        mode_for(self.sharing)
    }
}

/// How a file the tool writes under a git dir is written: 0644, or, in a shared repository,
/// git's modes for it and for a folder made for it.
pub fn mode_for(sharing: Sharing) -> Mode {
    match sharing.is_shared() {
        false => Mode::Fixed(0o644),
        true => Mode::FixedIn {
            file: sharing.file_mode(0o644),
            dir: sharing.dir_mode(),
        },
    }
}

/// The bytes of `path`: Missing if there is no such file, Invalid if it is not a regular file
/// (a FIFO or a directory in its place is damage like any other: never blocked on, kept aside
/// and recovered from the backup).
fn read_bytes(path: &Path) -> anyhow::Result<Result<fsio::Bytes, Problem>> {
    Ok(read_stamped(path)?.map(|(bytes, _)| bytes))
}

/// [`read_bytes`], with the [`Stamp`] of the file the bytes came from (one fstat of the open
/// file: the stamp and the bytes are of one file, whatever renames happen meanwhile).
fn read_stamped(path: &Path) -> anyhow::Result<Result<(fsio::Bytes, Stamp), Problem>> {
    match fsio::read_mapped_stamped(path) {
        Ok(Some(read)) => Ok(Ok(read)),
        Ok(None) => Ok(Err(Problem::Missing)),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Ok(Err(Problem::Invalid(e.to_string())))
        }
        Err(e) => Err(e).with_context(|| format!("could not read {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Result<Registry, Problem>> {
    Ok(read_bytes(path)?.and_then(|b| parse_in(parent(path), b).1))
}

/// The directory a registry file is in (its records file is beside it).
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// [`parse_owned`], with the records of a registry that keeps them apart read from their
/// file in `dir` ([`super::apart`]): on a second thread while `ports.json` is parsed, from
/// where its last bytes say they are (checked against what the parse finds).
fn parse_in(dir: &Path, bytes: fsio::Bytes) -> (Option<Arc<FileText>>, Result<Registry, Problem>) {
    let guess = apart::named_at_end(&bytes);
    std::thread::scope(|scope| {
        let mut ahead = guess.map(|at| (at, scope.spawn(move || read_apart(dir, at))));
        let (file, parsed) = parse_owned(bytes);
        let parsed = parsed.and_then(|mut reg| {
            let Some(at) = reg.records_named()? else {
                return Ok(reg);
            };
            let (text, read) = match ahead.take() {
                Some((guessed, read)) if guessed == at => {
                    read.join().expect("reading records does not panic")?
                }
                _ => read_apart(dir, at)?,
            };
            reg.set_records_apart(at, text, read);
            Ok(reg)
        });
        (file, parsed)
    })
}

/// Parse the bytes of a registry file that is in `dir` (`ports.json`, its backup, a kept
/// damaged one), its records read wherever they are.
pub fn parse_file_in(dir: &Path, bytes: &[u8]) -> Result<Registry, Problem> {
    parse_in(dir, bytes.to_vec().into()).1
}

/// The records `at` names, in `dir`: exactly the committed bytes (past them, a save that did
/// not commit).
fn read_apart(dir: &Path, at: Apart) -> Result<(Arc<FileText>, apart::Read), Problem> {
    crate::sys::fault::pause("records.read");
    let path = dir.join(at.file_name());
    let bytes = match fsio::read_prefix(&path, at.bytes) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(Problem::RecordsGone(path.display().to_string())),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(Problem::Invalid(format!(
                "{} is shorter than the {} bytes ports.json says it committed",
                path.display(),
                at.bytes
            )));
        }
        Err(e) => return Err(Problem::Invalid(format!("{}: {e}", path.display()))),
    };
    let text = FileText::new(bytes)
        .map_err(|e| Problem::Invalid(format!("{}: not UTF-8 text: {e}", path.display())))?;
    let text = Arc::new(text);
    let read =
        apart::read(&text).map_err(|e| Problem::Invalid(format!("{}: {e}", path.display())))?;
    Ok((text, read))
}

/// Another repository's ports only ([`super::codec::parse_ports_only`]), without the lock:
/// the backup when the file is damaged, as [`load_unlocked`] does. Never writes.
pub fn load_ports_unlocked(paths: &Paths) -> anyhow::Result<Loaded> {
    let parse = super::codec::parse_ports_only;
    let mut stamp = None;
    let main = read_stamped(&paths.file)?.and_then(|(b, s)| {
        stamp = Some(s);
        parse(&b)
    });
    let mut loaded = resolve(paths, main, || {
        Ok(read_bytes(&paths.backup)?.and_then(|b| parse(&b)))
    })?;
    if !loaded.recovered && loaded.warnings.is_empty() {
        loaded.stamp = stamp;
    }
    Ok(loaded)
}

/// One worktree's ports from `ports.json`, read without the lock and without building the
/// registry ([`super::one`]). None, to read it whole ([`load_unlocked`], which recovers and
/// says why), when the file is missing, not plainly sound as far as the scan reads, or not as
/// long as its backup (a save cut short, a truncated file, a hand edit, a seed file without
/// a backup): what the scan does not read is then not taken on trust either.
pub fn ports_of_unlocked(paths: &Paths, key: &str) -> Option<super::one::One> {
    let (file, meta) = fsio::open_regular_meta(&paths.file).ok()??;
    if fs::metadata(&paths.backup).ok()?.len() != meta.len() {
        return None;
    }
    super::one::ports_in(file, key)
}

/// How a load went, besides the registry itself.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The registry to use.
    pub registry: Registry,
    /// Things the user must hear about (recovery from the backup).
    pub warnings: Vec<String>,
    /// True when the registry came from the backup and should be written back.
    pub recovered: bool,
    /// The [`Stamp`] of the `ports.json` it was read from ([`load_ports_unlocked`] only; None
    /// when it came from the backup).
    pub stamp: Option<Stamp>,
    /// A save did not finish (a crash): the backup is not the same as `ports.json`, or a
    /// temp file is left. A writer should take the lock, whose load repairs both.
    pub unfinished: bool,
    /// The bytes of the `ports.json` this was parsed from, and its [`Stamp`] when they were
    /// read (lock-free loads of a whole file only): a writer that takes the lock next reuses
    /// the parse if the file still holds exactly these bytes (see [`Lock::reload`]).
    source: Option<(Arc<FileText>, Stamp)>,
}

impl Loaded {
    /// True when the load needed no recovery and no save is half done: what a fast path may
    /// answer from without the lock.
    pub fn is_clean(&self) -> bool {
        self.warnings.is_empty() && !self.unfinished
    }
}

fn corrupt(paths: &Paths, main: &Problem, backup: &Problem) -> anyhow::Error {
    Error::new(
        Code::RegistryCorrupt,
        format!(
            "{} is unusable ({main}) and so is its backup {} ({backup}); nothing was changed. \
             Run `git worktree-ports repair` to rebuild it from git's worktree list and every readable record",
            paths.file.display(),
            paths.backup.display()
        ),
    )
    .with(Details::Registry(RegistryDamage {
        file: paths.file.display().to_string(),
        problem: main.to_string(),
        backup: paths.backup.display().to_string(),
        backup_problem: backup.to_string(),
    }))
    .into()
}

fn newer(paths: &Paths, v: u64) -> anyhow::Error {
    Error::new(
        Code::RegistryCorrupt,
        format!(
            "{} has version {v}, newer than this git-worktree-ports understands ({VERSION}); upgrade git-worktree-ports (nothing was changed)",
            paths.file.display()
        ),
    )
    .with(Details::Newer(NewerRegistry {
        file: paths.file.display().to_string(),
        version: v,
    }))
    .into()
}

/// Decide what to use from the main file's and the backup's state. Pure, shared by the locked
/// and the lock-free load.
fn resolve(
    paths: &Paths,
    main: Result<Registry, Problem>,
    read_backup: impl FnOnce() -> anyhow::Result<Result<Registry, Problem>>,
) -> anyhow::Result<Loaded> {
    let problem = match main {
        Ok(registry) => {
            return Ok(Loaded {
                registry,
                ..Loaded::default()
            });
        }
        Err(Problem::Newer(v)) => return Err(newer(paths, v)),
        Err(p) => p,
    };
    match (problem, read_backup()?) {
        (Problem::Missing, Err(Problem::Missing)) => Ok(Loaded::default()),
        (Problem::Empty, Err(Problem::Missing | Problem::Empty)) => Ok(Loaded {
            warnings: vec![format!(
                "{} is empty and has no backup, so it never held an allocation; starting with an empty registry",
                paths.file.display()
            )],
            ..Loaded::default()
        }),
        (_, Err(Problem::Newer(v))) => Err(newer(paths, v)),
        (problem, Ok(registry)) => Ok(Loaded {
            registry,
            warnings: vec![format!(
                "{} is unusable ({problem}); recovered the last committed state from {}",
                paths.file.display(),
                paths.backup.display()
            )],
            recovered: true,
            unfinished: false,
            stamp: None,
            source: None,
        }),
        (problem, Err(backup)) => Err(corrupt(paths, &problem, &backup)),
    }
}

/// The bytes read (when there were any) and what they parse to.
fn split(
    dir: &Path,
    read: Result<fsio::Bytes, Problem>,
) -> (Option<Arc<FileText>>, Result<Registry, Problem>) {
    match read {
        Ok(bytes) => parse_in(dir, bytes),
        Err(p) => (None, Err(p)),
    }
}

/// Load without the lock, for readers (`list`, `get`, `check`). Never writes.
pub fn load_unlocked(paths: &Paths) -> anyhow::Result<Loaded> {
    // A save that wrote the records whole into a new file removes the one an earlier
    // `ports.json` named, once the new one names the new file: read that one then.
    let mut tries = 0;
    let (stamp, bytes, main) = loop {
        let file = read_stamped(&paths.file)?;
        let stamp = file.as_ref().ok().map(|(_, stamp)| *stamp);
        let (bytes, main) = split(&paths.dir, file.map(|(bytes, _)| bytes));
        tries += 1;
        if tries < 3 && matches!(main, Err(Problem::RecordsGone(_))) {
            continue;
        }
        break (stamp, bytes, main);
    };
    let mut loaded = resolve(paths, main, || read(&paths.backup))?;
    // A crash between the two renames of a save leaves the backup one step behind, and a
    // crash inside a save leaves a temp file. A stat and one small readdir catch both (the
    // next locked load rewrites the backup and sweeps the temp files).
    let backup_len = fs::metadata(&paths.backup).map(|m| m.len()).ok();
    loaded.unfinished = bytes
        .as_ref()
        .is_some_and(|b| Some(b.len() as u64) != backup_len)
        || fsio::has_temp_files(&paths.dir, &[OsStr::new(FILE), OsStr::new(BACKUP)])
        || loaded.registry.records_apart().is_some_and(|at| {
            // Bytes past the committed ones: an append whose save did not commit.
            fs::metadata(paths.dir.join(at.file_name()))
                .map(|m| m.len())
                .ok()
                != Some(at.bytes)
        });
    if loaded.warnings.is_empty() {
        loaded.source = bytes.zip(stamp);
    }
    Ok(loaded)
}

/// Every file that may hold registry records, newest first: `ports.json`, `ports.json.bak`,
/// then the kept `ports.json.corrupt-*` files.
pub fn record_files(paths: &Paths) -> Vec<PathBuf> {
    let mut corrupt: Vec<PathBuf> = fs::read_dir(&paths.dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("ports.json.corrupt-")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    // The timestamp in the name sorts by time.
    corrupt.sort();
    corrupt.reverse();
    let mut out = vec![paths.file.clone(), paths.backup.clone()];
    out.extend(corrupt);
    out
}

/// The registry lock; released on drop (closing the file releases it, also on a crash).
#[derive(Debug)]
pub struct Lock {
    paths: Paths,
    /// `ports.json`'s bytes when the backup has not been checked against them yet: checked
    /// (and rewritten if it lags) when the lock is let go without a save, since a save
    /// writes the backup anyway and a check before it would read 2.4 MB for nothing.
    unchecked_backup: std::cell::RefCell<Option<Arc<FileText>>>,
    /// From how many records a save keeps them apart ([`records_apart_from`]).
    apart_from: usize,
    // Declared last: dropped after `Drop::drop` has settled the backup.
    _lock: FileLock,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(current) = self.unchecked_backup.get_mut().take() {
            // Best effort: a backup that cannot be written now is written by the next
            // command that locks.
            let _ = self.catch_up_backup(current.as_bytes());
        }
    }
}

impl Lock {
    /// Take the lock, waiting up to `timeout`; `on_wait` is called once after about a second.
    pub fn acquire(
        paths: &Paths,
        timeout: Duration,
        on_wait: &dyn Fn(&Path),
    ) -> anyhow::Result<Lock> {
        Ok(Lock {
            _lock: lock::acquire_with(&paths.lock, paths.mode(), timeout, on_wait)?,
            paths: paths.clone(),
            unchecked_backup: std::cell::RefCell::new(None),
            apart_from: records_apart_from(),
        })
    }

    /// Read the registry under the lock, recovering from the backup if needed (and writing
    /// the recovered state back at once, keeping the damaged file aside).
    pub fn load(&self) -> anyhow::Result<Loaded> {
        self.sweep();
        let paths = &self.paths;
        let (bytes, main) = split(&paths.dir, read_bytes(&paths.file)?);
        let damaged = matches!(main, Err(Problem::Invalid(_)));
        let mut loaded = resolve(paths, main, || read(&paths.backup))?;
        if loaded.recovered {
            if damaged {
                let aside = self.keep_aside()?;
                loaded
                    .warnings
                    .push(format!("the damaged file is kept as {}", aside.display()));
            }
            loaded.warnings.extend(self.save(&mut loaded.registry)?);
            loaded.recovered = false;
        } else if let Some(current) = &bytes {
            self.catch_up_backup(current.as_bytes())?;
            if let Some(at) = loaded.registry.records_apart() {
                // An append whose save never committed: cut, so that readers without the lock
                // no longer find the save unfinished and come here every time.
                let path = paths.dir.join(at.file_name());
                fsio::cut_at(&path, at.bytes).with_context(|| {
                    format!("could not cut {} to its committed length", path.display())
                })?;
            }
        }
        Ok(loaded)
    }

    /// The registry to write: `unlocked` itself when `ports.json` still holds exactly the
    /// bytes it was parsed from (a 10,000-worktree registry is not parsed twice), else a fresh
    /// load. A file that was read is compared by content, not by file metadata: an inode
    /// number reused by a later save, or a file system with one-second timestamps, could make
    /// a stale parse look current, and saving it would lose the newer update. A file that was
    /// mapped is compared by its [`Stamp`]: the mapping keeps its inode, so no other file can
    /// have that number meanwhile, and a change made in place, which the mapping itself shows,
    /// changes its times (comparing the mapping's bytes with the file's compared the same
    /// cached pages, 0.2-0.3 ms for 2.3 MB, and could not see such a change).
    pub fn reload(&self, unlocked: Loaded) -> anyhow::Result<Loaded> {
        self.sweep();
        let unchanged = match &unlocked.source {
            Some((seen, stamp)) if seen.is_mapped() => stamp.still(&self.paths.file),
            Some((seen, _)) => fsio::same_content(&self.paths.file, seen.as_bytes())
                .with_context(|| format!("could not read {}", self.paths.file.display()))?,
            None => false,
        };
        if !unchanged {
            return self.load();
        }
        let mut unlocked = unlocked;
        *self.unchecked_backup.borrow_mut() = unlocked.source.take().map(|(seen, _)| seen);
        Ok(Loaded {
            unfinished: false,
            ..unlocked
        })
    }

    /// `ports.json` is whole (it parsed) but the backup may lag behind it: a crash between
    /// the two renames of a save. Recovery must never go back to an older state. Compared in
    /// full, not by length: a change of one port to another of as many digits keeps it.
    fn catch_up_backup(&self, current: &[u8]) -> anyhow::Result<()> {
        if !fsio::same_content(&self.paths.backup, current).unwrap_or(false) {
            let content = &mut |f: &mut fs::File| io::Write::write_all(f, current);
            write_backup(&self.paths.backup, content, self.paths.mode())?;
        }
        Ok(())
    }

    /// Remove temp files of dead writers: only the lock holder writes them, so every one found
    /// now is a leftover. Also the names earlier versions wrote (`ports.json.tmp`,
    /// `ports.json.bak.tmp`, `ports.json.tmp.<pid>`).
    /// One readdir for all three kinds.
    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.paths.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let ours = [FILE, BACKUP, HISTORY]
                .iter()
                .any(|t| fsio::is_temp_of(&file, OsStr::new(t)));
            let name = file.to_string_lossy();
            let records = name.starts_with(".records-")
                && fsio::is_temp_of(
                    &file,
                    OsStr::new(name[1..].split(".wp-tmp.").next().unwrap_or_default()),
                );
            let ours = ours || records;
            let older =
                name.starts_with(FILE) && (name.ends_with(".tmp") || name.contains(".tmp."));
            if ours || older {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Move a damaged `ports.json` aside as `ports.json.corrupt-<time>` (never deleted).
    pub fn keep_aside(&self) -> anyhow::Result<PathBuf> {
        let aside = self
            .paths
            .dir
            .join(format!("ports.json.corrupt-{}", timestamp_for_file()));
        fs::rename(&self.paths.file, &aside)
            .with_context(|| format!("could not move {} aside", self.paths.file.display()))?;
        Ok(aside)
    }

    /// Atomically replace `ports.json` (then its backup) with `registry`. Once `ports.json`
    /// is replaced the change is committed: a backup that cannot be written then (a full
    /// disk) is a warning, returned, never a failure of the committed change (the next
    /// command that locks rewrites it).
    pub fn save(&self, registry: &mut Registry) -> anyhow::Result<Option<String>> {
        self.save_then(registry, &mut |_| Ok(()))
    }

    /// [`Lock::save`], calling `before_commit` with the new file's [`Stamp`] once it is
    /// written and synced, before it replaces `ports.json` (an error there leaves the registry
    /// as it was). Every save gives the file a modification time of its own, so the stamp the
    /// machine index keeps of an earlier save never matches a later one.
    pub fn save_then(
        &self,
        registry: &mut Registry,
        before_commit: fsio::BeforeRename<'_>,
    ) -> anyhow::Result<Option<String>> {
        // The backup is written below: no need to check the old one.
        self.unchecked_backup.borrow_mut().take();
        let was_apart = registry.records_apart().is_some();
        let (records, unsynced) = self.write_records(registry)?;
        registry.prepare_save();
        let mut warnings = Vec::new();
        // History an earlier version kept in ports.json moves to history.jsonl before the
        // file without it replaces ports.json: a crash between the two repeats those entries
        // there, never loses them. Not appended, they stay in ports.json.
        if !registry.file_history().is_empty() {
            match append_history(&self.paths, registry.file_history(), self.paths.mode()) {
                Ok(()) => registry.history_moved(),
                Err(e) => warnings.push(history_warning(&self.paths, &e)),
            }
        }
        // The backup: the bytes of the new file, copied by the kernel into the backup's temp
        // file while the disk writes the new file (a 2.3 MB registry's copy, 0.65 ms, no longer
        // follows the sync's wait), and put in place once the new file is committed: the
        // backup is the last committed state, never one that was not (this process holds the
        // lock, so the bytes are the registry it wrote). A crash before the commit leaves the
        // staged copy as a dead writer's temp file, which the next save sweeps.
        let (backup, mode) = (&self.paths.backup, self.paths.mode());
        let mut staged = None;
        let stage = &mut |new: &fs::File| {
            let copy = &mut |f: &mut fs::File| {
                let mut from = new;
                io::Seek::seek(&mut from, io::SeekFrom::Start(0))?;
                io::copy(&mut from, f).map(|_| ())
            };
            staged = Some(stage_backup(backup, copy, mode));
        };
        // Records appended are synced while ports.json is written and synced (two flushes
        // at once, not one after the other), and before ports.json names them.
        std::thread::scope(|scope| {
            let mut syncing =
                unsynced.map(|(path, file)| (path, scope.spawn(move || file.sync_data())));
            let before = &mut |stamp| {
                if let Some((path, sync)) = syncing.take() {
                    (sync.join().expect("a sync does not panic"))
                        .with_context(|| format!("could not sync {}", path.display()))?;
                }
                before_commit(stamp)
            };
            fsio::write_atomic_stamped(
                &self.paths.file,
                &mut |f| registry.write_to(f),
                WriteOptions {
                    durability: Durability::Full,
                    mode,
                    label: "registry",
                },
                before,
                Some(stage),
            )
        })?;
        // What this command did, once it is committed (never an entry for a save that failed).
        let events = registry.take_events();
        if !events.is_empty()
            && let Err(e) = append_history(&self.paths, &events, self.paths.mode())
        {
            warnings.push(history_warning(&self.paths, &e));
        }
        let committed = staged
            .expect("a durable write calls what runs while it syncs")
            .and_then(fsio::Staged::commit);
        match committed {
            // Neither ports.json nor its backup names another generation of the records now
            // (one readdir, only where records are or were apart).
            Ok(()) if was_apart || records.is_some() => {
                remove_records_but(&self.paths.dir, records.map(|at| at.generation))
            }
            Ok(()) => {}
            Err(e) => warnings.push(format!(
                "the change is saved, but its backup could not be written ({e:#}); the next command that changes the registry writes it again"
            )),
        }
        Ok((!warnings.is_empty()).then(|| warnings.join("; ")))
    }

    /// Where this save keeps the records: from [`records_apart_from`] records on, in their own
    /// file ([`apart`]), written and synced here, before `ports.json` commits them by naming
    /// their length; else in `ports.json` (None).
    /// The records' file appended to is returned, to be synced before `ports.json` commits.
    fn write_records(&self, registry: &mut Registry) -> anyhow::Result<RecordsWritten> {
        let count = registry.records_len();
        let from = self.apart_from;
        let apart = count >= from || (registry.records_apart().is_some() && count >= from / 2);
        if !apart {
            registry.records_written(None, None);
            return Ok((None, None));
        }
        let mut lines = Vec::new();
        if let Some((at, added)) = registry.records_appended(&mut lines) {
            let path = self.paths.dir.join(at.file_name());
            let unsynced = match added {
                0 => None,
                _ => Some(
                    fsio::write_at(&path, at.bytes, &lines)
                        .with_context(|| format!("could not append to {}", path.display()))?,
                ),
            };
            let now = Apart {
                generation: at.generation,
                bytes: at.bytes + lines.len() as u64,
            };
            registry.records_written(Some(now), Some(added));
            return Ok((Some(now), unsynced.map(|f| (path, f))));
        }
        // Written whole, into a generation no file has yet (one a crashed save made is left
        // to be removed).
        lines.clear();
        registry.records_whole(&mut lines);
        let generation = (records_generations(&self.paths.dir).into_iter())
            .chain(registry.records_apart().map(|at| at.generation))
            .max()
            .map_or(1, |g| g + 1);
        let path = self.paths.dir.join(apart::file_name(generation));
        fsio::write_atomic(
            &path,
            &lines,
            WriteOptions {
                durability: Durability::Full,
                mode: self.paths.mode(),
                label: "records",
            },
        )?;
        crate::sys::fault::point("records.whole");
        let now = Apart {
            generation,
            bytes: lines.len() as u64,
        };
        registry.records_written(Some(now), None);
        Ok((Some(now), None))
    }
}

/// Where a save keeps the records ([`Lock::write_records`]), and the records file it
/// appended to, not synced yet.
type RecordsWritten = (Option<Apart>, Option<(PathBuf, fs::File)>);

/// From how many records a registry keeps them in their own file: [`apart::APART_FROM`], or
/// `GIT_WORKTREE_PORTS_RECORDS_APART_FROM` (the tests' small registries).
fn records_apart_from() -> usize {
    std::env::var("GIT_WORKTREE_PORTS_RECORDS_APART_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(apart::APART_FROM)
}

/// The generations of the records files in `dir`.
fn records_generations(dir: &Path) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    (entries.flatten())
        .filter_map(|e| apart::generation_of(e.file_name().to_str()?))
        .collect()
}

/// Remove every records file in `dir` but generation `keep`'s (best effort: the next save
/// tries again).
fn remove_records_but(dir: &Path, keep: Option<u64>) {
    for generation in records_generations(dir) {
        if Some(generation) != keep {
            let _ = fs::remove_file(dir.join(apart::file_name(generation)));
        }
    }
}

fn history_warning(paths: &Paths, e: &io::Error) -> String {
    format!(
        "the change is saved, but its history entries could not be appended to {} ({e}); check that file's permissions and free space",
        paths.history.display()
    )
}

/// Append `entries` to `history.jsonl`, one line each, in one write (under the registry's
/// lock, the only writer). Not synced: a log, whose last lines a crash may lose (or leave
/// torn: a line that does not end the file is never written after, the next append starts
/// a line of its own). Past [`HISTORY_MAX`] the file is replaced by its newest
/// [`HISTORY_KEEP`] bytes of whole lines and the new ones.
fn append_history(paths: &Paths, entries: &[super::Text], mode: Mode) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let mut lines = Vec::with_capacity(entries.iter().map(|e| e.get().len() + 1).sum());
    for entry in entries {
        // A hand-indented entry: a line break can only be white space between JSON tokens.
        let start = lines.len();
        lines.extend_from_slice(entry.get().as_bytes());
        for b in &mut lines[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        lines.push(b'\n');
    }
    let mut file = fsio::open_appending(&paths.history, mode.file_bits().unwrap_or(0o644))?;
    let len = file.metadata()?.len();
    if len == 0
        && let Some(bits) = mode.file_bits()
    {
        // Created here: the repository's mode, whatever the umask (another user's file in a
        // shared repository cannot be changed, and need not be).
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(fs::Permissions::from_mode(bits));
    }
    if len + lines.len() as u64 > HISTORY_MAX {
        // From the file opened above (never through a link), from its start.
        let mut old = Vec::with_capacity(len as usize);
        io::Read::read_to_end(&mut file, &mut old)?;
        let from = old.len().saturating_sub(HISTORY_KEEP);
        let from = match from {
            0 => 0,
            _ => old[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(old.len(), |i| from + i + 1),
        };
        let mut kept = old[from..].to_vec();
        if kept.last().is_some_and(|&b| b != b'\n') {
            kept.push(b'\n');
        }
        kept.extend_from_slice(&lines);
        return fsio::write_atomic(
            &paths.history,
            &kept,
            WriteOptions {
                durability: Durability::Lazy,
                mode,
                label: "history",
            },
        )
        .map_err(io::Error::other);
    }
    let mut last = [b'\n'];
    if len > 0 {
        file.read_exact_at(&mut last, len - 1)?;
    }
    if last[0] != b'\n' {
        lines.insert(0, b'\n');
    }
    file.write_all(&lines)
}

/// The backup is not fsynced: it only matters if ports.json is damaged later, and a crash
/// cannot damage ports.json (fsynced before its rename). A backup a crash loses is rewritten
/// from ports.json by the next command that locks. Its fsyncs were a third of a save.
/// Something that is not a regular file in its place (a directory, a FIFO) is moved aside as
/// `ports.json.bak.corrupt-<time>` first: replacing a directory would fail every later save.
fn write_backup(path: &Path, content: fsio::Content<'_>, mode: Mode) -> anyhow::Result<()> {
    stage_backup(path, content, mode)?.commit()
}

/// The backup's new content written beside it, to be put in place by [`fsio::Staged::commit`]
/// (never synced: a lagging backup is written again by the next locked command). Anything but
/// a regular file at its name is moved aside first.
fn stage_backup(
    path: &Path,
    content: fsio::Content<'_>,
    mode: Mode,
) -> anyhow::Result<fsio::Staged> {
    if let Ok(meta) = fs::symlink_metadata(path)
        && !meta.file_type().is_file()
    {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{}", timestamp_for_file()));
        fs::rename(path, &aside).with_context(|| {
            format!(
                "{} is {}, not a regular file, and could not be moved aside; remove it",
                path.display(),
                fsio::kind_of(meta.file_type())
            )
        })?;
    }
    fsio::stage_lazy(
        path,
        content,
        WriteOptions {
            durability: Durability::Lazy,
            mode,
            label: "backup",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, Text};
    use serde_json::Value;
    use std::collections::{BTreeMap, BTreeSet};
    use std::fs::File;

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        (dir, paths)
    }

    /// The same registry on every call: no history entry, whose timestamp would differ when
    /// two calls straddle a second.
    fn sample() -> Registry {
        let mut r = Registry::default();
        r.restore_ports("main", &BTreeMap::from([("web".to_string(), 8080)]))
            .unwrap();
        r
    }

    fn lock(paths: &Paths) -> Lock {
        Lock::acquire(paths, Duration::from_secs(5), &|_| {}).unwrap()
    }

    /// A lock whose saves keep the records apart from `from` records on.
    fn lock_apart(paths: &Paths, from: usize) -> Lock {
        let mut l = lock(paths);
        l.apart_from = from;
        l
    }

    fn record(path: &str) -> super::super::WorktreeRecord {
        super::super::WorktreeRecord {
            path: path.into(),
            branch: None,
            allocated_at: "2026-12-04T00:00:00Z".into(),
            id: Some(format!("id-{path}")),
            compose_project_name: None,
            slot: None,
            hostname: None,
            extra: BTreeMap::new(),
        }
    }

    /// Worktrees a and b saved, their records apart (from two on): the lock that saved them.
    fn two_apart(paths: &Paths) -> Lock {
        let l = lock_apart(paths, 2);
        let mut reg = Registry::default();
        put(&mut reg, "a", 8080);
        put(&mut reg, "b", 8081);
        l.save(&mut reg).unwrap();
        l
    }

    /// Worktree `key` with one port and a record.
    fn put(reg: &mut Registry, key: &str, port: u16) {
        reg.restore_ports(key, &BTreeMap::from([("web".to_string(), port)]))
            .unwrap();
        reg.set_record(key, &record(&format!("/w/{key}")));
    }

    fn records_of(reg: &Registry) -> Vec<(String, String)> {
        (reg.worktrees.iter())
            .map(|i| (i.key.to_string(), i.raw.to_string()))
            .collect()
    }

    fn records_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = (names(dir).into_iter())
            .filter(|n| n.contains("records-"))
            .collect();
        names.sort();
        names
    }

    /// Issue 28, item 2: from the threshold on, a save writes the records whole into their
    /// own file, then appends what changed; below half of it they go back into ports.json and
    /// the file goes. Every state reads back the same, locked or not, file and backup alike.
    #[test]
    fn records_go_apart_from_the_threshold_are_appended_and_come_back_below_half() {
        let (_d, paths) = paths();
        let l = lock_apart(&paths, 4);
        let mut reg = Registry::default();
        put(&mut reg, "a", 8080);
        put(&mut reg, "b", 8081);
        put(&mut reg, "c", 8082);
        l.save(&mut reg).unwrap();
        assert!(
            fs::read(&paths.file)
                .unwrap()
                .starts_with(b"{\"version\":1,")
        );
        assert_eq!(records_files(&paths.dir), Vec::<String>::new());

        let mut reg = l.load().unwrap().registry;
        put(&mut reg, "d", 8083);
        l.save(&mut reg).unwrap();
        let text = fs::read_to_string(&paths.file).unwrap();
        assert!(text.starts_with("{\"version\":2,"), "{text}");
        assert!(!text.contains("\"worktrees\""), "{text}");
        assert_eq!(records_files(&paths.dir), ["records-1.jsonl"]);
        let whole = fs::metadata(paths.dir.join("records-1.jsonl"))
            .unwrap()
            .len();

        let mut reg = load_unlocked(&paths).unwrap().registry;
        assert_eq!(reg.records_len(), 4);
        put(&mut reg, "e", 8084);
        reg.remove_worktree("a");
        let expected = records_of(&reg);
        l.save(&mut reg).unwrap();
        assert_eq!(records_files(&paths.dir), ["records-1.jsonl"]);
        // Two lines appended to the same generation, in key order: a's removal, e's record.
        let log = fs::read_to_string(paths.dir.join("records-1.jsonl")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 6, "{log}");
        assert_eq!(lines[4], r#"{"a":null}"#);
        assert!(lines[5].starts_with(r#"{"e":{"path":"/w/e","#), "{log}");
        assert!(log.len() as u64 > whole);
        for loaded in [l.load().unwrap(), load_unlocked(&paths).unwrap()] {
            assert!(loaded.is_clean(), "{:?}", loaded.warnings);
            assert_eq!(records_of(&loaded.registry), expected);
            assert_eq!(
                loaded.registry.records_apart().unwrap().bytes,
                log.len() as u64
            );
        }
        assert_eq!(
            fs::read(&paths.backup).unwrap(),
            fs::read(&paths.file).unwrap()
        );

        // Two records stay apart (half of 4); one goes back into ports.json.
        let mut reg = l.load().unwrap().registry;
        reg.remove_worktree("b");
        reg.remove_worktree("c");
        l.save(&mut reg).unwrap();
        assert!(
            fs::read(&paths.file)
                .unwrap()
                .starts_with(b"{\"version\":2,")
        );
        let mut reg = l.load().unwrap().registry;
        reg.remove_worktree("d");
        let expected = records_of(&reg);
        l.save(&mut reg).unwrap();
        let text = fs::read_to_string(&paths.file).unwrap();
        assert!(text.starts_with("{\"version\":1,"), "{text}");
        assert_eq!(records_files(&paths.dir), Vec::<String>::new());
        assert_eq!(records_of(&l.load().unwrap().registry), expected);
        assert_eq!(expected.len(), 1);
    }

    /// Bytes past the length ports.json names (an append whose save never committed) are
    /// never read, make a lock-free load unfinished, and are cut by the next locked load or
    /// save.
    #[test]
    fn an_uncommitted_tail_of_the_records_is_never_read_and_is_cut_by_the_next_save() {
        let (_d, paths) = paths();
        let l = two_apart(&paths);
        let file = paths.dir.join("records-1.jsonl");
        let committed = fs::read(&file).unwrap();
        let mut torn = committed.clone();
        // Longer than the line the next save appends: a save that did not cut it first
        // would leave some of it past the new committed length.
        torn.extend_from_slice(
            format!(
                "{{\"z\":{{\"path\":\"/w/{}\"}}}}\n{{\"a\":nu",
                "z".repeat(300)
            )
            .as_bytes(),
        );
        fs::write(&file, &torn).unwrap();

        let loaded = load_unlocked(&paths).unwrap();
        assert!(loaded.unfinished && !loaded.is_clean());
        assert_eq!(loaded.registry.records_len(), 2);
        assert!(loaded.registry.record("z").is_none() && loaded.registry.record("a").is_some());
        // The locked load a reader then takes cuts it, even with nothing to save.
        drop(l.load().unwrap());
        assert_eq!(fs::read(&file).unwrap(), committed);
        assert!(load_unlocked(&paths).unwrap().is_clean());
        fs::write(&file, &torn).unwrap();

        let mut reg = l.load().unwrap().registry;
        put(&mut reg, "c", 8082);
        l.save(&mut reg).unwrap();
        let log = fs::read(&file).unwrap();
        assert!(log.starts_with(&committed));
        assert_eq!(
            Some(log.len() as u64),
            load_unlocked(&paths)
                .unwrap()
                .registry
                .records_apart()
                .map(|at| at.bytes)
        );
        assert_eq!(&log[committed.len()..], br#"{"c":{"path":"/w/c","branch":null,"allocated_at":"2026-12-04T00:00:00Z","id":"id-/w/c"}}
"#);
        let loaded = load_unlocked(&paths).unwrap();
        assert!(loaded.is_clean());
        assert_eq!(loaded.registry.records_len(), 3);
    }

    /// A records file grown past twice its records' lines is written whole into the next
    /// generation, and the older one goes once ports.json and its backup name the new; a
    /// generation a crashed save left (never named) goes too.
    #[test]
    fn a_long_records_file_is_written_whole_into_the_next_generation() {
        let (_d, paths) = paths();
        let l = two_apart(&paths);
        fs::write(paths.dir.join("records-7.jsonl"), "left by a crash\n").unwrap();
        let mut generations = BTreeSet::new();
        for i in 0..80 {
            let mut reg = l.load().unwrap().registry;
            reg.set_record("a", &record(&format!("/w/a{i}")));
            l.save(&mut reg).unwrap();
            let loaded = load_unlocked(&paths).unwrap();
            generations.insert(loaded.registry.records_apart().map(|at| at.generation));
            assert!(loaded.is_clean());
            assert_eq!(
                loaded.registry.record("a").unwrap().path,
                format!("/w/a{i}")
            );
            let at = loaded.registry.records_apart().unwrap();
            assert_eq!(records_files(&paths.dir), [apart::file_name(at.generation)]);
        }
        // 2 records: whole again past 2 x 2 + 64 lines, into the next generation (the
        // orphan went with the first save that committed).
        assert_eq!(generations, BTreeSet::from([Some(1), Some(2)]));
    }

    /// A `records` key a registry of version 1 kept as unknown (someone's own) is kept while
    /// the records are in ports.json, and gives way to this tool's when they go apart: the
    /// file never names the key twice.
    #[test]
    fn an_unknown_records_key_of_version_1_never_makes_the_key_twice() {
        let (_d, paths) = paths();
        fs::create_dir_all(&paths.dir).unwrap();
        fs::write(
            &paths.file,
            r#"{"version":1,"allocated_ports":{"a":{"web":8080}},"worktrees":{"a":{"path":"/w/a"}},"records":"mine"}"#,
        )
        .unwrap();
        let l = lock_apart(&paths, 2);
        let mut reg = l.load().unwrap().registry;
        l.save(&mut reg).unwrap();
        assert!(
            fs::read_to_string(&paths.file)
                .unwrap()
                .contains(r#""records":"mine""#)
        );
        let mut reg = l.load().unwrap().registry;
        put(&mut reg, "b", 8081);
        l.save(&mut reg).unwrap();
        let text = fs::read_to_string(&paths.file).unwrap();
        assert_eq!(text.matches(r#""records":"#).count(), 1, "{text}");
        assert!(text.starts_with(r#"{"version":2,"#), "{text}");
        assert_eq!(load_unlocked(&paths).unwrap().registry.records_len(), 2);
    }

    /// A records file that is gone is damage, not an empty registry: the locked load refuses
    /// (nothing written) and says how to repair; a lock-free load says so too.
    #[test]
    fn a_missing_records_file_is_refused_never_read_as_no_records() {
        let (_d, paths) = paths();
        let l = two_apart(&paths);
        fs::remove_file(paths.dir.join("records-1.jsonl")).unwrap();
        let before = fs::read(&paths.file).unwrap();
        let e = format!("{:#}", l.load().unwrap_err());
        assert!(
            e.contains("records-1.jsonl is missing") && e.contains("repair"),
            "{e}"
        );
        assert!(load_unlocked(&paths).is_err());
        assert_eq!(fs::read(&paths.file).unwrap(), before);
        assert_eq!(fs::read(&paths.backup).unwrap(), before);
    }

    fn names(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn history_lines(paths: &Paths) -> Vec<String> {
        let text = fs::read_to_string(&paths.history).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_save_moves_the_history_ports_json_held_to_history_jsonl_then_appends_its_own() {
        let (_dir, paths) = paths();
        fs::create_dir_all(&paths.dir).unwrap();
        // As an earlier version wrote it, one entry indented over lines by hand.
        fs::write(
            &paths.file,
            "{\"version\":1,\"allocated_ports\":{\"main\":{\"web\":8080}},\"port_ranges\":{},\
             \"history\":[{\"action\":\"assigned\",\"worktree\":\"old\"},\n  {\"action\":\r\n \"released\"}]}",
        )
        .unwrap();
        let lock = lock(&paths);
        let mut reg = lock.load().unwrap().registry;
        reg.log(super::super::Event::Repaired);
        assert_eq!(lock.save(&mut reg).unwrap(), None);
        let lines = history_lines(&paths);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], r#"{"action":"assigned","worktree":"old"}"#);
        assert_eq!(lines[1], r#"{"action":   "released"}"#);
        let last: Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(last["action"], "repaired");
        let file: Value = serde_json::from_slice(&fs::read(&paths.file).unwrap()).unwrap();
        assert_eq!(file["history"], serde_json::json!([]));
        // Saved again: nothing moved twice, nothing appended without an event.
        let mut reg = lock.load().unwrap().registry;
        lock.save(&mut reg).unwrap();
        assert_eq!(history_lines(&paths).len(), 3);
    }

    #[test]
    fn history_jsonl_is_never_appended_through_a_symbolic_link() {
        let (dir, paths) = paths();
        fs::create_dir_all(&paths.dir).unwrap();
        let elsewhere = dir.path().join("elsewhere.txt");
        fs::write(&elsewhere, "theirs\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &paths.history).unwrap();
        let lock = lock(&paths);
        let mut reg = sample();
        reg.log(super::super::Event::Repaired);
        let warning = lock.save(&mut reg).unwrap().expect("a warning");
        assert!(warning.contains("history.jsonl"), "{warning}");
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "theirs\n");
        // The change itself is saved.
        assert!(lock.load().unwrap().registry.ports("main").is_some());
    }

    #[test]
    fn history_jsonl_steps_over_a_torn_last_line_and_is_cut_to_whole_lines_past_its_bound() {
        let (_dir, paths) = paths();
        fs::create_dir_all(&paths.dir).unwrap();
        let entry = |n: usize| Text::Own(format!("{{\"n\":{n}}}").into());
        // A crash inside an append left half a line.
        fs::write(&paths.history, "{\"n\":0}\n{\"n\":").unwrap();
        append_history(&paths, &[entry(1)], Mode::Fixed(0o644)).unwrap();
        assert_eq!(history_lines(&paths), ["{\"n\":0}", "{\"n\":", "{\"n\":1}"]);
        // Past the bound: the newest whole lines up to HISTORY_KEEP bytes, then the new ones.
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000));
        let old = line.repeat(HISTORY_MAX as usize / line.len() + 1);
        fs::write(&paths.history, &old).unwrap();
        append_history(&paths, &[entry(2), entry(3)], Mode::Fixed(0o644)).unwrap();
        let text = fs::read_to_string(&paths.history).unwrap();
        assert!(text.len() <= HISTORY_KEEP + 20, "{}", text.len());
        assert!(text.len() > HISTORY_KEEP - line.len(), "{}", text.len());
        assert!(text.starts_with("{\"pad\""), "starts with a whole line");
        assert!(text.ends_with("{\"n\":2}\n{\"n\":3}\n"));
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<Value>(l).is_ok())
        );
        assert_eq!(names(&paths.dir).len(), 1, "no temp file left");
    }

    #[test]
    fn a_save_replaces_temp_files_a_crashed_save_left() {
        // `repair` saves without a `load`, which is what removes them otherwise.
        let (_d, paths) = paths();
        fs::create_dir_all(&paths.dir).unwrap();
        fs::write(fsio::temp_path(&paths.file), b"half").unwrap();
        fs::write(fsio::temp_path(&paths.backup), b"half").unwrap();
        lock(&paths).save(&mut sample()).unwrap();
        assert_eq!(read(&paths.file).unwrap().unwrap(), sample());
        assert!(
            names(&paths.dir).iter().all(|n| !n.contains("tmp")),
            "{:?}",
            names(&paths.dir)
        );
    }

    #[test]
    fn a_locked_load_sweeps_every_kind_of_leftover_and_nothing_else() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        l.save(&mut sample()).unwrap();
        let leftovers = [
            ".ports.json.wp-tmp.4242",
            ".ports.json.bak.wp-tmp.4243",
            "ports.json.tmp",
            "ports.json.bak.tmp",
            "ports.json.tmp.77",
        ];
        let kept = ["ports.json.corrupt-2026", ".other.wp-tmp.1", "notes.tmp"];
        for n in leftovers.iter().chain(&kept) {
            fs::write(paths.dir.join(n), b"x").unwrap();
        }
        l.load().unwrap();
        let mut left = names(&paths.dir);
        left.sort();
        let mut want: Vec<String> = ["ports.json", "ports.json.bak", "ports.lock"]
            .iter()
            .chain(&kept)
            .map(|s| s.to_string())
            .collect();
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn save_writes_file_and_identical_backup_and_no_temp_files() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        let mut r = sample();
        assert_eq!(l.save(&mut r).unwrap(), None);
        assert_eq!(
            fs::read(&paths.file).unwrap(),
            fs::read(&paths.backup).unwrap()
        );
        assert!(names(&paths.dir).iter().all(|n| !n.contains("tmp")));
        assert_eq!(l.load().unwrap().registry, r);
    }

    #[test]
    fn damaged_file_recovers_from_backup_and_is_kept_aside() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        let mut r = sample();
        assert_eq!(l.save(&mut r).unwrap(), None);
        fs::write(&paths.file, b"{\"allocated_ports\": {\"main\": {\"we").unwrap();
        let loaded = l.load().unwrap();
        assert_eq!(loaded.registry, r);
        assert!(
            loaded.warnings[0].contains("recovered"),
            "{:?}",
            loaded.warnings
        );
        // Written back at once, damaged copy kept.
        assert!(super::super::parse(&fs::read(&paths.file).unwrap()).is_ok());
        let aside = names(&paths.dir)
            .iter()
            .filter(|n| n.contains("corrupt-"))
            .count();
        assert_eq!(aside, 1);
    }

    #[test]
    fn both_damaged_is_refused_and_nothing_changes() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        fs::write(&paths.file, b"garbage").unwrap();
        fs::write(&paths.backup, b"more garbage").unwrap();
        let err = l.load().unwrap_err();
        assert_eq!(
            crate::model::error::classify(&err).code,
            Code::RegistryCorrupt
        );
        assert_eq!(fs::read(&paths.file).unwrap(), b"garbage");
        assert_eq!(fs::read(&paths.backup).unwrap(), b"more garbage");
        // Damaged file without any backup: refused too, never "empty".
        fs::remove_file(&paths.backup).unwrap();
        assert!(l.load().is_err());
        assert!(load_unlocked(&paths).is_err());
    }

    #[test]
    fn empty_file_without_backup_is_an_empty_registry_with_a_warning() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        fs::write(&paths.file, b"").unwrap();
        let loaded = l.load().unwrap();
        assert_eq!(loaded.registry.size(), 0);
        assert_eq!(loaded.warnings.len(), 1);
        // With a backup, the backup wins.
        let mut r = sample();
        assert_eq!(l.save(&mut r).unwrap(), None);
        fs::write(&paths.file, b"").unwrap();
        assert_eq!(l.load().unwrap().registry, r);
    }

    #[test]
    fn newer_version_is_refused_not_recovered() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        l.save(&mut sample()).unwrap();
        fs::write(&paths.file, br#"{"version": 9, "allocated_ports": {}}"#).unwrap();
        let err = l.load().unwrap_err();
        assert!(format!("{err}").contains("upgrade"), "{err}");
        assert!(
            fs::read(&paths.file)
                .unwrap()
                .starts_with(b"{\"version\": 9")
        );
    }

    #[test]
    fn leftover_temp_files_are_removed_under_the_lock() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        fs::write(paths.dir.join("ports.json.tmp.99999"), b"half").unwrap();
        fs::write(paths.dir.join("ports.json.tmp"), b"half").unwrap();
        // A temp name carrying a live pid (ours) is still a leftover: only lock holders write.
        fs::write(fsio::temp_path(&paths.file), b"half").unwrap();
        assert!(load_unlocked(&paths).unwrap().unfinished);
        l.load().unwrap();
        assert!(
            names(&paths.dir).iter().all(|n| !n.contains("tmp")),
            "{:?}",
            names(&paths.dir)
        );
    }

    /// Regression (issue 14, defect 3): the lock-free parse was reused when `ports.json`'s
    /// metadata (device, inode, length, mtime, ctime) looked unchanged. A newer file with the
    /// same metadata (inode reused, coarse timestamps: forged here by restoring them) was
    /// overwritten by the stale parse: a lost update and a port handed out twice.
    #[test]
    fn a_stale_parse_is_never_reused_when_the_bytes_changed_but_the_metadata_did_not() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        let mut r = sample();
        assert_eq!(l.save(&mut r).unwrap(), None);
        let stale = load_unlocked(&paths).unwrap();
        // Another writer commits a change of the same length in place, keeping the mtime.
        let before = fs::metadata(&paths.file).unwrap();
        let text = fs::read_to_string(&paths.file).unwrap();
        let newer = text.replace("8080", "8081");
        assert_eq!(newer.len(), text.len());
        fs::write(&paths.file, &newer).unwrap();
        fs::write(&paths.backup, &newer).unwrap();
        let f = File::options().write(true).open(&paths.file).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        drop(f);
        let reloaded = l.reload(stale).unwrap();
        let web = reloaded.registry.ports("main").unwrap().get("web");
        assert_eq!(web, Some(8081), "the newer file wins");
        let v: Value = serde_json::from_slice(&fs::read(&paths.file).unwrap()).unwrap();
        assert_eq!(v["allocated_ports"]["main"]["web"], 8081);
    }

    /// A registry large enough to be mapped is known unchanged by its stamp: its lock-free
    /// parse is reused (and a lagging backup caught up, as for one that was read); a change
    /// made in place, which the mapping shows too, and a file renamed over it are read again.
    #[test]
    fn a_mapped_registry_is_reused_while_unchanged_and_read_again_after_a_change() {
        use std::os::unix::fs::FileExt;
        let (_d, paths) = paths();
        let note = "x".repeat(fsio::MAP_FROM as usize);
        let text = |port: u16| {
            format!(
                "{{\"version\":1,\"port_ranges\":{{}},\"allocated_ports\":{{\"main\":{{\"web\":{port}}}}},\"worktrees\":{{}},\"history\":[],\"note\":\"{note}\"}}\n"
            )
        };
        let port_of = |loaded: &Loaded| loaded.registry.ports("main").unwrap().get("web");
        fs::create_dir_all(&paths.dir).unwrap();
        fs::write(&paths.file, text(8080)).unwrap();
        fs::write(&paths.backup, text(8079)).unwrap();
        let l = lock(&paths);
        let unlocked = load_unlocked(&paths).unwrap();
        assert!(unlocked.source.as_ref().unwrap().0.is_mapped());
        assert_eq!(port_of(&l.reload(unlocked).unwrap()), Some(8080));
        drop(l);
        assert_eq!(
            fs::read_to_string(&paths.backup).unwrap(),
            text(8080),
            "caught up"
        );

        // Changed in place after the lock-free read: a new modification time.
        let unlocked = load_unlocked(&paths).unwrap();
        let at = text(8080).find("8080").unwrap() as u64;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&paths.file)
            .unwrap();
        f.write_all_at(b"8081", at).unwrap();
        let later = fs::metadata(&paths.file).unwrap().modified().unwrap();
        f.set_modified(later + Duration::from_millis(3)).unwrap();
        drop(f);
        let l = lock(&paths);
        assert_eq!(
            port_of(&l.reload(unlocked).unwrap()),
            Some(8081),
            "read again"
        );
        drop(l);

        // Another file of the same length renamed over it.
        let unlocked = load_unlocked(&paths).unwrap();
        let other = paths.dir.join("other");
        fs::write(&other, text(8082)).unwrap();
        fs::rename(&other, &paths.file).unwrap();
        let l = lock(&paths);
        assert_eq!(
            port_of(&l.reload(unlocked).unwrap()),
            Some(8082),
            "read again"
        );
    }

    #[test]
    fn an_unchanged_file_reuses_the_lock_free_parse_and_catches_up_a_lagging_backup() {
        let (_d, paths) = paths();
        let l = lock(&paths);
        l.save(&mut sample()).unwrap();
        let current = fs::read_to_string(&paths.file).unwrap();
        // A backup one step behind, and of the same length: no stat can tell.
        fs::write(&paths.backup, current.replace("8080", "8079")).unwrap();
        let unlocked = load_unlocked(&paths).unwrap();
        assert!(unlocked.source.is_some());
        let reloaded = l.reload(unlocked).unwrap();
        assert_eq!(reloaded.registry, sample());
        // Checked when the lock is let go without a save (a save writes it anyway).
        drop(l);
        assert_eq!(fs::read_to_string(&paths.backup).unwrap(), current);
        // A backup of another length is noticed without the lock too.
        fs::write(&paths.backup, b"{}").unwrap();
        assert!(load_unlocked(&paths).unwrap().unfinished);
    }
}
