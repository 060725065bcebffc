//! Builds the example guests (`examples/guests/*.rs`) for wasm32 against the prelude with rustc
//! directly, the way the gateway will compile `rust` statements; the tests embed the modules.
//! A toolchain without the wasm32 target gets it through rustup first, as the gateway does.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../compiler/src/toolchain.rs"]
#[allow(dead_code)]
mod toolchain;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("guests");
    std::fs::create_dir_all(&out).expect("guest dir");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    println!("cargo:rerun-if-changed={}", root.join("prelude/src").display());
    println!("cargo:rerun-if-changed={}", root.join("examples/guests").display());
    let sysroot = toolchain::sysroot(&rustc).unwrap_or_else(|e| panic!("{e}"));
    toolchain::ensure_target(&sysroot, &mut |step| println!("cargo:warning={step}")).unwrap_or_else(|e| panic!("{e}"));

    let common = [
        "--edition",
        "2024",
        "--target",
        "wasm32-unknown-unknown",
        "-C",
        "opt-level=3",
        "-C",
        "target-feature=+simd128",
    ];
    run(Command::new(&rustc)
        .args(common)
        .args(["--crate-type", "rlib", "--crate-name", "prelude", "--out-dir"])
        .arg(&out)
        .arg(root.join("prelude/src/lib.rs")));
    let mut guests: Vec<PathBuf> = std::fs::read_dir(root.join("examples/guests"))
        .expect("examples/guests")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    guests.sort();
    for guest in guests {
        let name = guest.file_stem().and_then(|s| s.to_str()).expect("guest name").to_owned();
        run(Command::new(&rustc)
            .args(common)
            .args(["--crate-type", "cdylib", "--crate-name", &name, "-C", "strip=debuginfo", "-C", "panic=abort"])
            .arg("--extern")
            .arg(format!("prelude={}", out.join("libprelude.rlib").display()))
            .arg("-L")
            .arg(&out)
            .arg(&guest)
            .arg("-o")
            .arg(out.join(format!("{name}.wasm"))));
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run rustc");
    assert!(output.status.success(), "{command:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}
