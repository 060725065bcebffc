//! Finding the Rust toolchain behind a `rustc` and making sure it can build for wasm32: when the
//! `wasm32-unknown-unknown` target is missing and the toolchain is rustup's, it is installed with
//! `rustup target add`, as rustup itself would have done had it installed the toolchain from
//! `rust-toolchain.toml`.
//!
//! std only: `tests/build.rs` includes this file too, so the gateway and the test guests find and
//! complete the toolchain the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target snippets and the prelude are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// The sysroot of `rustc` (a path, or a name on `PATH` such as the rustup proxy, which resolves
/// `rust-toolchain.toml` and `RUSTUP_TOOLCHAIN` as usual).
///
/// # Errors
/// When `rustc` cannot run or fails.
pub fn sysroot(rustc: &str) -> Result<PathBuf, String> {
    // rustc finds its sysroot from where its own libraries were loaded: a library path inherited
    // from `cargo run` or `cargo test` (another toolchain's `lib`) would name that one instead.
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .map_err(|e| format!("cannot run `{rustc}`: {e}"))?;
    if !output.status.success() {
        return Err(format!("`{rustc} --print sysroot` failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

/// Whether the toolchain at `sysroot` has the standard library for [`TARGET`].
pub fn has_target(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir()
}

/// A toolchain managed by rustup: `<rustup home>/toolchains/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rustup {
    /// The rustup home the toolchain lives in (`RUSTUP_HOME` for the rustup we run).
    pub home: PathBuf,
    /// The toolchain's name (its directory), e.g. `1.95.0-x86_64-unknown-linux-gnu`.
    pub toolchain: String,
}

impl Rustup {
    /// The rustup toolchain `sysroot` is, if it is one.
    pub fn of(sysroot: &Path) -> Option<Self> {
        let toolchains = sysroot.parent()?;
        if toolchains.file_name()? != "toolchains" {
            return None;
        }
        let home = toolchains.parent()?.to_path_buf();
        Some(Self { home, toolchain: sysroot.file_name()?.to_str()?.to_owned() })
    }

    /// The command a person runs to add the target by hand.
    pub fn command(&self) -> String {
        format!("rustup target add {TARGET} --toolchain {}", self.toolchain)
    }
}

/// Where the `rustup` binary is: on `PATH`, else in `$CARGO_HOME/bin` or `~/.cargo/bin`.
pub fn find_rustup() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("rustup")).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    on_path.into_iter().chain(cargo_home.map(|home| home.join("bin/rustup"))).find(|candidate| candidate.is_file())
}

/// Makes sure the toolchain at `sysroot` can build for [`TARGET`]: installs the target with
/// rustup when it is missing, telling `log` what it does.
///
/// # Errors
/// When the target is missing and cannot be installed: the message names the one command to
/// run (or what to install when the toolchain is not rustup's).
pub fn ensure_target(sysroot: &Path, log: &mut dyn FnMut(&str)) -> Result<(), String> {
    if has_target(sysroot) {
        return Ok(());
    }
    let missing = format!("the {TARGET} target is not installed in {}", sysroot.display());
    let Some(rustup) = Rustup::of(sysroot) else {
        return Err(format!(
            "{missing}, and this toolchain is not managed by rustup: install the {TARGET} standard library \
             for it, or set `rustc` to a rustup toolchain's rustc"
        ));
    };
    let Some(binary) = find_rustup() else {
        return Err(format!("{missing}, and rustup is not on PATH: run `{}`", rustup.command()));
    };
    log(&format!("{missing}; installing it: {}", rustup.command()));
    let output = Command::new(&binary)
        .args(["target", "add", TARGET, "--toolchain", &rustup.toolchain])
        .env("RUSTUP_HOME", &rustup.home)
        // The toolchain is named; nothing else may pick another (or install one).
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output();
    let output = output.map_err(|e| format!("{missing}, and `{}` could not run: {e}", binary.display()))?;
    if output.status.success() && has_target(sysroot) {
        log(&format!("installed the {TARGET} target in {}", sysroot.display()));
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_owned();
    Err(format!("{missing}, and `{}` failed ({said}): run it by hand, or fix what it says", rustup.command()))
}
