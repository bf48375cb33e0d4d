//! Link the unwinder statically on Linux with glibc, so that the binary does not load
//! `libgcc_s.so.1` at every start: each shared library costs a start 0.15-0.2 ms on the
//! machines measured (opening, mapping and relocating it, and libgcc_s's constructor, which
//! asks the CPU what it supports: slow in a virtual machine). `libgcc_eh.a` is the same
//! unwinder, which GCC ships beside `libgcc.a`; with every `_Unwind_*` symbol defined from it,
//! the linker (`--as-needed`, rustc's default) leaves `libgcc_s` out. Where the C compiler
//! does not know a `libgcc_eh.a` (clang alone, another libc), nothing changes.
//! BENCHMARKS.md, "Fourteenth session", has the numbers.
//!
//! And lay out the code the everyday commands run together, in the order
//! `benches/symbol-order.txt` gives (made by `benches/symbol-order.sh`), when the linker takes
//! a `--symbol-ordering-file` (rust-lld, rustc's default linker on x86_64 Linux, does): a
//! start pays for every page of code it maps, and that code was spread over all 7.5 MB of
//! text. Whether the linker takes it is tried by linking an empty program the same way; where
//! it does not (GNU ld, macOS), nothing changes. BENCHMARKS.md, "Fifteenth session", has the
//! numbers.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    symbol_order();
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

/// Pass `benches/symbol-order.txt` to the binary's linker, if the linker takes it.
fn symbol_order() {
    let Some(dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = Path::new(&dir).join("benches/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    // `-Wl,` splits its argument at commas.
    let Some(path) = order.to_str().filter(|p| !p.contains(',')) else {
        println!("cargo:rustc-env=GWP_SYMBOL_ORDER=not applied: the path has a comma");
        return;
    };
    if !order.is_file() {
        println!("cargo:rustc-env=GWP_SYMBOL_ORDER=not applied: there is no {path}");
        return;
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={path}"),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    // Said to the crate's own tests (`tests/cli/finish.rs` checks the layout when applied).
    if links_with(&args) {
        for a in &args {
            println!("cargo:rustc-link-arg-bins={a}");
        }
        println!("cargo:rustc-env=GWP_SYMBOL_ORDER=applied");
    } else {
        println!(
            "cargo:rustc-env=GWP_SYMBOL_ORDER=not applied: the linker does not take --symbol-ordering-file"
        );
    }
}

/// Whether an empty program links for the target with these linker arguments added to the
/// build's own flags and linker.
fn links_with(link_args: &[String]) -> bool {
    let (Some(out), Some(target)) = (env::var_os("OUT_DIR"), env::var_os("TARGET")) else {
        return false;
    };
    let out = PathBuf::from(out);
    let src = out.join("link_probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let mut cmd = Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        cmd.arg("-C").arg(arg);
    }
    for a in link_args {
        cmd.arg("-C").arg(format!("link-arg={a}"));
    }
    cmd.arg("--target")
        .arg(target)
        .arg("--crate-type=bin")
        .arg("-o")
        .arg(out.join("link_probe"))
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}
