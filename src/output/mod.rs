//! What the user sees: colour and the progress line (stdout is printed only by `lib::run`).

pub mod colour;
pub mod progress;
pub mod warn;
