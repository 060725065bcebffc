//! `tilegate`: runs the gateway. `cargo run --release` serves on 127.0.0.1:8998 with `./tilegate-data`.

use std::process::ExitCode;

use clap::Parser;
use tilegate_gateway::{AppState, Cli, Command, Config, serve};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A child the gateway starts to compile one wasm module, bounded (see tilegate_sandbox).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == tilegate_sandbox::COMPILE_COMMAND) {
        return tilegate_sandbox::serve_compile(&args[2..]);
    }
    gateway()
}

#[tokio::main]
async fn gateway() -> ExitCode {
    let filter = EnvFilter::try_from_env("TILEGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tilegate: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Some(command) = &cli.command {
        let mut secret = String::new();
        std::io::stdin().read_line(&mut secret).map_err(|e| format!("cannot read stdin: {e}"))?;
        let secret = secret.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            return Err("give the secret on stdin".into());
        }
        match command {
            Command::HashToken => println!("token_sha256 = [\"{}\"]", tilegate_gateway::hash_token(secret)),
            Command::HashPassword => println!("password_hash = \"{}\"", tilegate_gateway::hash_password(secret)?),
        }
        return Ok(());
    }
    let mut config = Config::load(&cli).map_err(|e| e.to_string())?;
    // Modules compile in children of this very binary (the path stays valid if the file is replaced).
    config.module_compiler = Some("/proc/self/exe".into());
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let data_dir = config.data_dir.display().to_string();
    let state = AppState::new(config).map_err(|e| e.to_string())?;
    let datasets: Vec<String> = state.catalog.list().iter().map(|d| d.name().to_owned()).collect();
    tracing::info!("datasets: {}", if datasets.is_empty() { "none".to_owned() } else { datasets.join(", ") });
    // Scripts (and the benchmark) read the bound address from this line.
    println!("tilegate {} listening on http://{addr} (data dir {data_dir})", env!("CARGO_PKG_VERSION"));
    serve(listener, state, shutdown_signal()).await.map_err(|e| e.to_string())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
