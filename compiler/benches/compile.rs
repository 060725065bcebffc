//! Compile latency of `rust` statements with the real toolchain.
//!
//! Run with: `cargo bench --workspace --bench compile`.
//!
//! Measures, in one run: the baseline of starting the toolchain's rustc (`rustc -vV`, the floor
//! of any compile); building the prelude rlib; cold compiles (a cache miss: rustc runs) of `6 * 7`
//! and of the NEXUS time series; cache hits from memory and from disk (a restarted gateway); and
//! four distinct cold compiles submitted at once with two compile slots.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tilegate_compiler::{Cell, Compiler, CompilerConfig, Isolation, Toolchain};

const TIME_SERIES: &str = r#"dataset("sst").bbox(-150.0, 45.0, -120.0, 60.0).time("2008-09-01", "2008-09-16")
    .map(|tile| tile.stats_by_time())
    .reduce_by_key(Stats::merge)"#;

fn main() {
    let dir = std::env::temp_dir().join(format!("tilegate-bench-compile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = CompilerConfig { cache_dir: dir.clone(), ..CompilerConfig::default() };
    let toolchain = Toolchain::find("rustc", Isolation::default(), &mut |step| eprintln!("{step}"))
        .expect("a rustc with the wasm32 target");
    let floor = median((0..7).map(|_| time(|| run_version(&toolchain))).collect());

    let compiler = Compiler::new(config.clone());
    let prelude = time(|| compiler.prepare().expect("prelude"));
    // A distinct trailing comment makes a distinct cache key: every compile below is a miss.
    let cold = |code: &str, n: usize| -> Vec<Duration> {
        (0..n).map(|i| time(|| compile(&compiler, &format!("{code}\n// run {i}")))).collect()
    };
    let answer = cold("6 * 7", 7);
    let series = cold(TIME_SERIES, 7);
    let runs_before = compiler.rustc_runs();
    let memory_hits: Vec<Duration> =
        (0..2000).map(|i| time(|| compile(&compiler, &format!("{TIME_SERIES}\n// run {}", i % 7)))).collect();
    assert_eq!(compiler.rustc_runs(), runs_before, "cache hits ran rustc");

    let restarted = Compiler::new(config.clone());
    restarted.prepare().expect("prelude from disk");
    let disk_hits: Vec<Duration> =
        (0..7).map(|i| time(|| compile(&restarted, &format!("{TIME_SERIES}\n// run {i}")))).collect();
    assert_eq!(restarted.rustc_runs(), 0, "the restarted compiler found everything on disk");

    let shared = Arc::new(Compiler::new(config));
    shared.prepare().expect("prelude");
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let c = shared.clone();
            std::thread::spawn(move || compile(&c, &format!("{TIME_SERIES}\n// parallel {i}")))
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().expect("compile thread"));
    let four = started.elapsed();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "rust statement compile latency (rustc {})",
        toolchain.version.lines().find(|l| l.starts_with("release")).unwrap_or("?")
    );
    println!("{:<52} {:>10} {:>10} {:>9}", "", "p50 ms", "max ms", "/ floor");
    let row = |name: &str, mut v: Vec<Duration>| {
        v.sort();
        let p50 = v[v.len() / 2];
        println!("{name:<52} {:>10.3} {:>10.3} {:>9.2}", ms(p50), ms(*v.last().unwrap_or(&p50)), ms(p50) / ms(floor));
    };
    row("baseline: rustc -vV (process floor)", vec![floor]);
    row("prelude rlib build (once per toolchain/prelude)", vec![prelude]);
    row("cold compile `6 * 7` (goal < 1500 ms)", answer);
    row("cold compile NEXUS time series (goal < 1500 ms)", series);
    row("cache hit, memory (goal < 5 ms)", memory_hits);
    row("cache hit, disk after restart", disk_hits);
    println!("4 distinct cold compiles at once, 2 slots: {:.0} ms wall", ms(four));
    let _ = std::fs::remove_dir_all(&dir);
}

fn compile(c: &Compiler, code: &str) {
    c.compile(&[], &Cell::parse(code)).unwrap_or_else(|e| panic!("{code}: {e}"));
}

fn run_version(toolchain: &Toolchain) {
    let ok =
        std::process::Command::new(&toolchain.rustc).arg("-vV").env_clear().output().is_ok_and(|o| o.status.success());
    assert!(ok, "rustc -vV");
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
