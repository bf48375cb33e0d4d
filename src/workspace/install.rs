//! Files the tool installs outside any repository: the man pages.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::model::error::{Code, Error};
use crate::sys::fsio::{self, Durability, Mode, WriteOptions};

/// Write `pages` (file name, roff) into `dir`, else where man-db looks for the installed
/// binary ([`default_dir`]), each atomically, 0644; returns the directory.
pub fn install_man_pages(
    dir: Option<&Path>,
    pages: &[(String, Vec<u8>)],
) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => default_dir()?,
    };
    for (name, roff) in pages {
        let path = dir.join(name);
        fsio::write_atomic(
            &path,
            roff,
            WriteOptions {
                durability: Durability::File,
                mode: Mode::Fixed(0o644),
                label: "man",
            },
        )
        .with_context(|| format!("could not write the man page {}", path.display()))?;
    }
    Ok(dir)
}

/// `<bin>/../share/man/man1` when that can be written, else `$XDG_DATA_HOME/man/man1`.
fn default_dir() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| Some(exe.parent()?.parent()?.join("share/man/man1")));
    if let Some(dir) = beside.filter(|d| fsio::writable(d)) {
        return Ok(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .ok_or_else(|| {
            Error::new(
                Code::IoError,
                "no place for the man pages: set HOME or XDG_DATA_HOME, or pass --dir DIR",
            )
        })?;
    Ok(data.join("man/man1"))
}
