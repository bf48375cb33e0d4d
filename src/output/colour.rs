//! When and how output is coloured: `--color auto|always|never`, `NO_COLOR` (no-color.org)
//! honoured by `auto`, which colours only a terminal. Used sparingly: status states, errors,
//! warnings. No I/O beyond asking whether a stream is a terminal.

use std::io::IsTerminal;
use std::sync::OnceLock;

use crate::cli::ColorChoice;

static CHOICE: OnceLock<ColorChoice> = OnceLock::new();

/// Set the choice for this process (once, before anything prints; later calls are ignored).
pub fn set(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

/// Colours for [`paint`].
#[derive(Debug, Clone, Copy)]
pub enum Colour {
    /// All is well.
    Green,
    /// Worth a look.
    Yellow,
    /// Needs attention.
    Red,
    /// Less important.
    Dim,
}

/// Which stream a text goes to: `auto` asks whether that one is a terminal.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn enabled(stream: Stream) -> bool {
    static OUT: OnceLock<bool> = OnceLock::new();
    static ERR: OnceLock<bool> = OnceLock::new();
    let decide = |terminal: bool| match CHOICE.get().copied().unwrap_or(ColorChoice::Auto) {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && terminal,
    };
    match stream {
        Stream::Stdout => *OUT.get_or_init(|| decide(std::io::stdout().is_terminal())),
        Stream::Stderr => *ERR.get_or_init(|| decide(std::io::stderr().is_terminal())),
    }
}

fn wrap(text: &str, colour: Colour, on: bool) -> String {
    if !on || text.is_empty() {
        return text.to_string();
    }
    let code = match colour {
        Colour::Green => "32",
        Colour::Yellow => "33",
        Colour::Red => "31",
        Colour::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `text` in `colour`, for stdout.
pub fn paint(text: &str, colour: Colour) -> String {
    wrap(text, colour, enabled(Stream::Stdout))
}

/// `text` in `colour`, for stderr (errors and warnings).
pub fn paint_err(text: &str, colour: Colour) -> String {
    wrap(text, colour, enabled(Stream::Stderr))
}
