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

/// A toolchain whose rustc is the real one for the prelude and for questions (`-vV`), but never
/// finishes a cell: a fake sysroot whose `bin/rustc` is a script, its `lib` the real sysroot's.
fn never_finishing_rustc(dir: &Path) -> String {
    let real = crate::toolchain::sysroot(&CompilerConfig::default().rustc).unwrap();
    let fake = dir.join("sysroot");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::os::unix::fs::symlink(real.join("lib"), fake.join("lib")).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *'--print sysroot'*) echo '{fake}' ;;\n  \
         *'--crate-name prelude'*|*-vV*|*--version*) exec '{real}/bin/rustc' \"$@\" ;;\n  *) exec /bin/sleep 20 ;;\nesac\n",
        fake = fake.display(),
        real = real.display()
    );
    let rustc = fake.join("bin/rustc");
    std::fs::write(&rustc, script).unwrap();
    std::fs::set_permissions(&rustc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    rustc.display().to_string()
}

#[test]
fn a_slow_compile_is_killed_at_the_deadline() {
    let config = compiler("slow").config;
    let rustc = never_finishing_rustc(&config.cache_dir);
    let deadline = Duration::from_millis(1500);
    let c = Compiler::new(CompilerConfig { rustc, deadline, isolation: Isolation::None, ..config });
    c.prepare().unwrap();
    let started = std::time::Instant::now();
    let err = compile(&c, "6 * 7").unwrap_err();
    assert!(matches!(err, Error::Timeout(d) if d == deadline), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "killed {:?} after the start", started.elapsed());
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
    let err = c.compile_for(&[], &cell, Request { user: "", cancel: &cancel, cpu_ns: &AtomicU64::new(0) }).unwrap_err();
    setter.join().unwrap();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
}

#[test]
fn without_a_toolchain_rust_statements_say_so() {
    let c = Compiler::new(CompilerConfig { rustc: "/nonexistent/rustc".into(), ..compiler("none").config });
    let err = compile(&c, "1").unwrap_err();
    assert_eq!(err.name(), "RustUnavailable");
    assert!(err.to_string().contains("cannot run `/nonexistent/rustc`"), "{err}");
}

#[test]
fn a_huge_constant_is_stopped_by_a_limit() {
    let c = compiler("huge");
    let started = std::time::Instant::now();
    let err = compile(&c, "static BIG: [u8; 1 << 30] = [7; 1 << 30];\nBIG[12345]").unwrap_err();
    // The address-space limit is what stops it: rustc's const evaluation cannot get the gigabyte.
    assert_eq!(err.name(), "CompileError", "{err:?} after {:?}", started.elapsed());
    assert!(err.to_string().contains("more memory than available to compiler"), "{err:?}");
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

/// Hands rustc a crate that reads `path` at compile time, past the guard (as a macro that builds
/// `#[path]` or `include_str!` from its arguments gets past it): the OS jail is the boundary.
fn read_at_compile_time(c: &Compiler, path: &Path) -> Result<Compiled, Error> {
    let ready = c.ready().unwrap();
    let main =
        format!("#[unsafe(no_mangle)]\npub extern \"C\" fn leak() -> usize {{ include_str!({path:?}).len() }}\n",);
    let files = vec![("main.rs".to_owned(), main)];
    let key = format!("{:064}", 0);
    c.run_snippet(
        ready,
        &key,
        &files,
        Request { user: "", cancel: &AtomicBool::new(false), cpu_ns: &AtomicU64::new(0) },
    )
    .map(|wasm| Compiled { wasm: wasm.into(), key, cached: false })
}

/// A file of the server's, with a unique secret in it.
fn canary(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("tilegate-canary-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = format!("canary-{}-{:?}", std::process::id(), std::time::SystemTime::now());
    std::fs::write(dir.join("secret.txt"), &secret).unwrap();
    (dir.join("secret.txt"), secret)
}

#[test]
fn without_isolation_rustc_reads_what_the_server_can() {
    // The baseline that shows the jail tests below can fail.
    let (file, _) = canary("none");
    let c = Compiler::new(CompilerConfig { isolation: Isolation::None, ..compiler("jail-none").config });
    read_at_compile_time(&c, &file).unwrap();
}

fn jailed_reads_see_nothing_of_the_host(isolation: Isolation, name: &str) {
    let (file, secret) = canary(name);
    let c = Compiler::new(CompilerConfig { isolation, ..compiler(name).config });
    let ready = c.ready().unwrap();
    // The secret, the host's accounts and processes, and the compile cache and sysroot by their
    // host paths (in the jail they are `/prelude` and `/rust`).
    let host = [
        file.clone(),
        "/etc/passwd".into(),
        "/proc/self/environ".into(),
        "/proc/1/cmdline".into(),
        ready.prelude.join("src/lib.rs"),
        ready.toolchain.sysroot.join("lib/rustlib/components"),
    ];
    for path in &host {
        assert!(path.is_file(), "{path:?} should exist on the host");
        let err = read_at_compile_time(&c, path).unwrap_err();
        let text = format!("{err} {}", err.traceback().concat());
        assert!(text.contains("couldn't read") && text.contains("No such file"), "{path:?}: {text}");
        assert!(!text.contains(&secret) && !text.contains("root:x:0"), "{path:?} leaked: {text}");
    }
    // What the jail does hold: the toolchain at its fixed path.
    read_at_compile_time(&c, Path::new("/rust/lib/rustlib/components")).unwrap();
}

#[test]
fn a_jailed_rustc_sees_nothing_of_the_host() {
    jailed_reads_see_nothing_of_the_host(Isolation::Namespaces, "jail-namespaces");
}

#[test]
fn a_jailed_rustc_in_a_user_namespace_sees_nothing_of_the_host() {
    jailed_reads_see_nothing_of_the_host(Isolation::UserNamespace, "jail-userns");
}

/// Waits (briefly polling) until `n` compiles wait for a slot.
fn until_waiting(slots: &Slots, n: usize) {
    while slots.lock().waiting.len() != n {
        std::thread::yield_now();
    }
}

#[test]
fn one_user_holds_at_most_their_share_of_the_compile_slots() {
    let slots = Arc::new(Slots::new(2, 1));
    let never = AtomicBool::new(false);
    let first = slots.acquire("ann", &never).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = {
        let (slots, tx) = (slots.clone(), tx.clone());
        std::thread::spawn(move || {
            let _slot = slots.acquire("ann", &AtomicBool::new(false)).unwrap();
            tx.send("ann").unwrap();
        })
    };
    until_waiting(&slots, 1);
    // A slot is free, but not for ann: bob gets it at once.
    let bob = slots.acquire("bob", &never).unwrap();
    assert!(rx.try_recv().is_err(), "ann's second compile ran beside her first");
    drop(bob);
    drop(first);
    assert_eq!(rx.recv().unwrap(), "ann");
    waiting.join().unwrap();
}

#[test]
fn a_freed_compile_slot_goes_to_the_user_with_the_fewest_running() {
    let slots = Arc::new(Slots::new(2, 2));
    let never = AtomicBool::new(false);
    let (a1, a2) = (slots.acquire("ann", &never).unwrap(), slots.acquire("ann", &never).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let wait = |user: &'static str| {
        let (slots, tx) = (slots.clone(), tx.clone());
        std::thread::spawn(move || {
            let slot = slots.acquire(user, &AtomicBool::new(false)).unwrap();
            tx.send(user).unwrap();
            drop(slot);
        })
    };
    let ann = wait("ann");
    until_waiting(&slots, 1);
    let bob = wait("bob");
    until_waiting(&slots, 2);
    // Ann asked first, but she has a compile running and Bob has none.
    drop(a1);
    assert_eq!(rx.recv().unwrap(), "bob");
    drop(a2);
    assert_eq!(rx.recv().unwrap(), "ann");
    ann.join().unwrap();
    bob.join().unwrap();
}
