//! The README's first command on a fresh machine, as a newcomer runs it: the real binary started
//! with no flags but a free port, in a directory of its own (so the data directory is the default
//! relative `./tilegate-data`), and on a rustup toolchain that lacks the wasm32 target.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Process, temp_dir};
use tilegate_compiler::toolchain::{self, Rustup, TARGET};

/// `cargo run --release` with no `--data-dir`: a relative `./tilegate-data` in the working
/// directory holds the demo dataset and the compile cache, and `rust` statements work. Also with
/// rustc's jail off, where rustc runs in its job directory, so a relative path handed to it would
/// name nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_relative_data_dir_serves_rust_statements() {
    for isolation in ["namespaces", "none"] {
        let cwd = temp_dir(&format!("first-run-{isolation}"));
        std::fs::write(cwd.join("tilegate.toml"), format!("compile_isolation = \"{isolation}\"\n")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tilegate"));
        command.args(["--bind", "127.0.0.1:0"]).current_dir(&cwd).env_remove("TILEGATE_DATA_DIR");
        // The isolation comes from a file named relatively too, through the environment.
        command.env("TILEGATE_CONFIG", "tilegate.toml");
        let gateway = Process::spawn(command, None);
        let http = reqwest::Client::new();

        let answer = run(&http, &gateway.url, "rust", "6 * 7").await;
        assert_eq!(answer["output"]["data"]["application/json"], 42, "{isolation}: {answer}");
        let series = "dataset(\"sst\").bbox(-150.0, 45.0, -120.0, 60.0).time(\"2008-09-01\", \"2008-09-02\")\n\
                      .map(|tile| tile.stats_by_time()).reduce_by_key(Stats::merge)";
        let series = run(&http, &gateway.url, "rust", series).await;
        assert_eq!(series["output"]["data"]["application/json"][0]["cnt"], 238, "{isolation}: {series}");
        let data = cwd.join("tilegate-data");
        assert!(data.join("datasets/sst.zarr").is_dir(), "the demo dataset is in ./tilegate-data");
        assert!(data.join("cache/rust").is_dir(), "the compile cache is in ./tilegate-data");
        drop(gateway);
        let _ = std::fs::remove_dir_all(&cwd);
    }
}

/// A rustup toolchain without the wasm32 target (rustup adds a `rust-toolchain.toml`'s targets
/// only when it installs the toolchain itself): the gateway installs the target at start, says so
/// in its log and in `/ready`, and then compiles. Where that cannot work, `/ready` and the
/// statement's error name the one command to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toolchain_without_the_wasm_target_gets_it_at_start() {
    let sysroot = toolchain::sysroot("rustc").unwrap();
    let (Some(rustup), Some(_)) = (Rustup::of(&sysroot), toolchain::find_rustup()) else {
        panic!("this test needs a rustup toolchain (rustc's sysroot is {})", sysroot.display());
    };
    let home = same_file_system_dir(&sysroot);
    let http = reqwest::Client::new();

    // Not rustup's: nothing to install it with. The error says what to do.
    let custom = home.join("custom").join(&rustup.toolchain);
    copy_without_wasm(&sysroot, &custom);
    let (gateway, log) = start(&home, "custom", &custom, &[]);
    let readiness = wait_ready(&http, &gateway.url).await;
    assert!(readiness["rust"].as_str().unwrap().contains("not managed by rustup"), "{readiness}");
    let failed = run(&http, &gateway.url, "rust", "6 * 7").await;
    assert_eq!(failed["output"]["ename"], "RustUnavailable", "{failed}");
    assert!(failed["output"]["evalue"].as_str().unwrap().contains(TARGET), "{failed}");
    drop(gateway);
    assert!(!std::fs::read_to_string(&log).unwrap().contains("installing it"));

    // rustup's, but rustup cannot download (a dist server nobody listens on): the error names
    // the command to run by hand.
    let managed = home.join("toolchains").join(&rustup.toolchain);
    copy_without_wasm(&sysroot, &managed);
    let nowhere = "http://127.0.0.1:9";
    let offline =
        [("RUSTUP_DIST_SERVER", nowhere), ("HTTPS_PROXY", nowhere), ("https_proxy", nowhere), ("ALL_PROXY", nowhere)];
    let (gateway, _) = start(&home, "offline", &managed, &offline);
    let readiness = wait_ready(&http, &gateway.url).await;
    let why = readiness["rust"].as_str().unwrap();
    assert!(why.contains(&format!("rustup target add {TARGET} --toolchain {}", rustup.toolchain)), "{readiness}");
    drop(gateway);
    assert!(!toolchain::has_target(&managed));

    // rustup's, with its dist server: the gateway installs the target, then compiles.
    let (gateway, log) = start(&home, "install", &managed, &[]);
    let readiness = wait_ready(&http, &gateway.url).await;
    assert_eq!(readiness["rust"], "ready", "{readiness}");
    let answer = run(&http, &gateway.url, "rust", "6 * 7").await;
    assert_eq!(answer["output"]["data"]["application/json"], 42, "{answer}");
    drop(gateway);
    assert!(toolchain::has_target(&managed), "installed into the throwaway toolchain");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(&format!("installing it: rustup target add {TARGET}")), "{log}");
    assert!(log.contains(&format!("installed the {TARGET} target")), "{log}");
    let _ = std::fs::remove_dir_all(&home);
}

/// Starts the gateway with `rustc` set to the toolchain at `sysroot`, the rustup home `home`, its
/// own compile cache (so the prelude is built with that toolchain) and its log in a file.
fn start(home: &Path, name: &str, sysroot: &Path, env: &[(&str, &str)]) -> (Process, PathBuf) {
    let dir = home.join(format!("gateway-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    let rustc = sysroot.join("bin/rustc");
    std::fs::write(&config, format!("demo_dataset = false\nrustc = {rustc:?}\ncompile_cache_dir = \"cache\"\n"))
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tilegate"));
    command.args(["--bind", "127.0.0.1:0", "--config"]).arg(&config).arg("--data-dir").arg(dir.join("data"));
    command.env("RUSTUP_HOME", home).env_remove("RUSTUP_TOOLCHAIN").env("TILEGATE_LOG", "info");
    for (key, value) in env {
        command.env(key, value);
    }
    let log = dir.join("stderr.log");
    (Process::spawn(command, Some(&log)), log)
}

/// `/ready` once it is 200 (what it says while it is 503 is checked to name a step).
async fn wait_ready(http: &reqwest::Client, url: &str) -> Value {
    let clock = Instant::now();
    loop {
        let response = http.get(format!("{url}/ready")).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == 200 {
            return body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body["msg"].as_str().unwrap().starts_with("starting: "), "{body}");
        assert!(clock.elapsed() < Duration::from_secs(900), "not ready after 15 minutes: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `code` in a new session and returns the finished statement.
async fn run(http: &reqwest::Client, url: &str, kind: &str, code: &str) -> Value {
    let session: Value =
        http.post(format!("{url}/sessions")).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let id = session["id"].as_u64().unwrap();
    let statements = format!("{url}/sessions/{id}/statements");
    let submitted: Value =
        http.post(&statements).json(&json!({"kind": kind, "code": code})).send().await.unwrap().json().await.unwrap();
    let sid = submitted["id"].as_u64().unwrap();
    loop {
        let st: Value = http.get(format!("{statements}/{sid}?wait=60")).send().await.unwrap().json().await.unwrap();
        if st["state"] == "available" {
            return st;
        }
    }
}

/// A fresh directory on the file system of `sysroot`, so its files can be hard-linked: a linked
/// `rustc` finds its sysroot from its own path, where a symlinked one would find the original.
fn same_file_system_dir(sysroot: &Path) -> PathBuf {
    let probe = sysroot.join("bin/rustc");
    let candidates = [std::env::temp_dir(), PathBuf::from(env!("CARGO_TARGET_TMPDIR"))];
    for base in candidates {
        let dir = base.join(format!("tilegate-rustup-home-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if std::fs::hard_link(&probe, dir.join("probe")).is_ok() {
            std::fs::remove_file(dir.join("probe")).unwrap();
            return dir;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    panic!("no temporary directory on the file system of {}", sysroot.display());
}

/// A copy of the toolchain at `from` without the wasm32 target (and without its docs): files
/// hard-linked, except rustup's small records, which it rewrites and so are copied.
fn copy_without_wasm(from: &Path, to: &Path) {
    let rustlib = from.join("lib/rustlib");
    let skip = [from.join("share"), rustlib.join(TARGET), rustlib.join(format!("manifest-rust-std-{TARGET}"))];
    let mut stack = vec![from.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let target = to.join(dir.strip_prefix(from).unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if skip.contains(&path) {
                continue;
            }
            let copy = target.join(path.file_name().unwrap());
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&path).unwrap(), &copy).unwrap();
            } else if dir == rustlib {
                std::fs::copy(&path, &copy).unwrap();
            } else {
                std::fs::hard_link(&path, &copy).unwrap();
            }
        }
    }
    let components = to.join("lib/rustlib/components");
    let kept: String = std::fs::read_to_string(&components)
        .unwrap()
        .lines()
        .filter(|line| *line != format!("rust-std-{TARGET}"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&components, kept).unwrap();
    // rustup's own record of the installed components, as TOML `[[components]]` blocks.
    let config = to.join("lib/rustlib/multirust-config.toml");
    if let Ok(text) = std::fs::read_to_string(&config) {
        let mut blocks = text.split("[[components]]");
        let head = blocks.next().unwrap_or_default().to_owned();
        let kept: String = blocks
            .filter(|block| !block.contains(&format!("target = \"{TARGET}\"")))
            .map(|block| format!("[[components]]{block}"))
            .collect();
        std::fs::write(&config, head + &kept).unwrap();
    }
    assert!(!toolchain::has_target(to));
}
