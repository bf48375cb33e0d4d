//! PURE: the rules and data types, with no files, sockets, processes or clock reads of their
//! own. Imports nothing from the crate outside `model`.

pub mod allocate;
pub mod attribution;
pub mod clock;
pub mod config;
pub mod error;
pub mod finding;
pub mod literals;
pub mod names;
pub mod portset;
pub mod salvage;
pub mod sharing;
