//! The compiler against the real toolchain (`rustc` with the wasm32 target, as CI installs it).

#![allow(clippy::unwrap_used)]

use super::*;

fn compiler(dir: &str) -> Compiler {
    let cache_dir = std::env::temp_dir().join(format!("tilegate-compiler-test-{dir}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache_dir);
    Compiler::new(CompilerConfig { cache_dir, ..CompilerConfig::default() })
}

fn compile(c: &Compiler, code: &str) -> Result<Compiled, Error> {
    c.compile(&[], &Cell::parse(code))
}

#[test]
fn every_prelude_file_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../prelude/src");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = PRELUDE.iter().map(|(n, _)| n.to_string()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded);
}

#[test]
fn a_cell_compiles_once_then_comes_from_the_cache() {
    let c = compiler("cache");
    let first = compile(&c, "6 * 7").unwrap();
    assert!(first.wasm.starts_with(b"\0asm") && !first.cached);
    let runs = c.rustc_runs();
    let second = compile(&c, "6 * 7").unwrap();
    assert!(second.cached);
    assert_eq!(second.key, first.key);
    assert_eq!(c.rustc_runs(), runs, "a cache hit must not run rustc");
    // A new compiler on the same directory finds the module on disk.
    let again = Compiler::new(c.config.clone());
    assert!(compile(&again, "6 * 7").unwrap().cached);
    assert_eq!(again.rustc_runs(), 0);
}

#[test]
fn errors_carry_the_users_lines_and_no_server_paths() {
    let c = compiler("errors");
    let err = compile(&c, "let a = 1;\nlet b: i32 = \"two\";\na + b").unwrap_err();
    assert_eq!(err.name(), "CompileError");
    assert!(err.to_string().contains("mismatched types"), "{err}");
    let text = err.traceback().concat();
    assert!(text.contains("--> cell:2:14"), "{text}");
    assert!(text.contains("let b: i32 = \"two\";"), "{text}");
    let cache = c.config.cache_dir.display().to_string();
    assert!(!text.contains(&cache) && !text.contains("/tmp") && !text.contains("/root"), "{text}");
    assert!(err.traceback().iter().all(|l| l.ends_with('\n')));
}

#[test]
fn results_that_cannot_become_json_say_so() {
    let c = compiler("json");
    let err = compile(&c, "struct Opaque;\nOpaque").unwrap_err();
    assert!(err.to_string().contains("must become JSON"), "{err}");
}

#[test]
fn refused_code_never_reaches_rustc() {
    let c = compiler("refused");
    let err = compile(&c, "let a = 1;\ninclude_str!(\"/etc/hostname\")").unwrap_err();
    assert!(matches!(err, Error::Refused { line: 2, .. }), "{err:?}");
    assert_eq!(c.rustc_runs(), 0);
}

#[test]
fn endless_const_eval_is_an_error_not_a_hang() {
    let c = compiler("const");
    let err = compile(&c, "const X: u64 = { let mut i = 0u64; loop { i += 1; } };\nX").unwrap_err();
    assert_eq!(err.name(), "CompileError", "{err}");
}

#[test]
fn a_slow_compile_is_killed_at_the_deadline() {
    let c = Compiler::new(CompilerConfig { deadline: Duration::from_millis(1500), ..compiler("slow").config });
    c.prepare().unwrap();
    let err = compile(&c, "const X: u64 = { let mut i = 0u64; while i < u64::MAX { i += 1; } i };\nX").unwrap_err();
    assert!(matches!(err, Error::Timeout(_) | Error::Rejected { .. }), "{err:?}");
}

#[test]
fn later_cells_see_earlier_items_and_may_redefine_them() {
    let c = compiler("history");
    let first = Arc::new(Cell::parse("fn twice(x: i32) -> i32 { x * 2 }\nstruct P { x: i32 }"));
    let earlier = vec![("statement-0".to_owned(), first)];
    c.compile(&earlier, &Cell::parse("twice(P { x: 21 }.x)")).unwrap();
    c.compile(&earlier, &Cell::parse("fn twice(x: f64) -> f64 { x * 2.0 }\ntwice(1.5)")).unwrap();
    let err = c.compile(&earlier, &Cell::parse("thrice(1)")).unwrap_err();
    assert!(err.to_string().contains("thrice"), "{err}");
}

#[test]
fn cancel_stops_a_compile_at_once() {
    let c = compiler("cancel");
    c.prepare().unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        flag.store(true, Ordering::Relaxed);
    });
    let cell = Cell::parse("const X: u64 = { let mut i = 0u64; while i < u64::MAX { i += 1; } i };\nX");
    let err = c.compile_cancellable(&[], &cell, &cancel).unwrap_err();
    setter.join().unwrap();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
}

#[test]
fn without_a_toolchain_rust_statements_say_so() {
    let c = Compiler::new(CompilerConfig { rustc: "/nonexistent/rustc".into(), ..compiler("none").config });
    let err = compile(&c, "1").unwrap_err();
    assert_eq!(err.name(), "RustUnavailable");
    assert!(err.to_string().contains("cannot run rustc"), "{err}");
}

#[test]
fn a_huge_constant_is_stopped_by_a_limit() {
    let c = compiler("huge");
    let started = std::time::Instant::now();
    let err = compile(&c, "static BIG: [u8; 1 << 30] = [7; 1 << 30];\nBIG[12345]").unwrap_err();
    eprintln!("{err:?} after {:?}", started.elapsed());
    assert!(matches!(err.name(), "CompileLimit" | "CompileError" | "CompileTimeout"), "{err:?}");
}

#[test]
fn compilers_sharing_a_cache_build_the_prelude_at_once_safely() {
    let config = compiler("shared").config;
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let c = Compiler::new(config);
                c.prepare().unwrap();
                compile(&c, "6 * 7").unwrap();
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}
