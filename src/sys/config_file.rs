//! Reads a worktree's `.worktree-ports/config.toml` (a regular file only, never blocking on a
//! FIFO) and hands its text to the pure [`Config::parse`].

use std::path::{Path, PathBuf};

use crate::model::config::{CONFIG_PATH, Config};
use crate::model::error::{Code, Error};

/// Load `<worktree>/.worktree-ports/config.toml`, or the built-in config if it is absent.
pub fn load(worktree: &Path) -> anyhow::Result<Config> {
    load_or(worktree, || Ok(None))
}

/// [`load`], asking `committed` for the config's bytes when the worktree has no
/// file (a worktree without a checkout: `git worktree add --no-checkout`), with the name
/// to give it in messages.
pub fn load_or(
    worktree: &Path,
    committed: impl FnOnce() -> anyhow::Result<Option<(Vec<u8>, PathBuf)>>,
) -> anyhow::Result<Config> {
    let mut path = worktree.join(CONFIG_PATH);
    let text = match super::fsio::read_regular(&path) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => match committed()? {
            Some((bytes, name)) => {
                path = name;
                bytes
            }
            None => return Ok(Config::builtin()),
        },
        Err(e) => {
            return Err(Error::new(
                Code::ConfigInvalid,
                format!("could not read {}: {e}", path.display()),
            )
            .into());
        }
    };
    let text = String::from_utf8(text).map_err(|_| {
        Error::new(
            Code::ConfigInvalid,
            format!("{} is not valid UTF-8", path.display()),
        )
    })?;
    Ok(Config::parse(&text, &path)?)
}
