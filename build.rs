//! Link the unwinder statically on Linux with glibc, so that the binary does not load
//! `libgcc_s.so.1` at every start: each shared library costs a start 0.15-0.2 ms on the
//! machines measured (opening, mapping and relocating it, and libgcc_s's constructor, which
//! asks the CPU what it supports: slow in a virtual machine). `libgcc_eh.a` is the same
//! unwinder, which GCC ships beside `libgcc.a`; with every `_Unwind_*` symbol defined from it,
//! the linker (`--as-needed`, rustc's default) leaves `libgcc_s` out. Where the C compiler
//! does not know a `libgcc_eh.a` (clang alone, another libc), nothing changes.
//! BENCHMARKS.md, "Fourteenth session", has the numbers.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let libc = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    // A static build (`crt-static`) links libgcc_eh already.
    if os != "linux" || libc != "gnu" || features.split(',').any(|f| f == "crt-static") {
        return;
    }
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let Ok(out) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Found, the compiler prints the file's path; not found, only the name it was asked for.
    if !out.status.success() || !Path::new(&found).is_absolute() || !Path::new(&found).is_file() {
        return;
    }
    // The whole archive: only then is every unwinder symbol defined before the linker sees
    // `-lgcc_s` (an archive gives only what is missing at its place on the command line).
    println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
}
