//! Gateway settings: defaults, overridden by an optional TOML file, overridden by flags and environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Command line. Every flag also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "tilegate",
    version,
    about = "A Livy-compatible REST gateway for sandboxed analytics on gridded datasets"
)]
pub struct Cli {
    /// A tool instead of the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on [default: 127.0.0.1:8998].
    #[arg(long, env = "TILEGATE_BIND")]
    pub bind: Option<SocketAddr>,
    /// Data directory, created if missing [default: ./tilegate-data].
    #[arg(long, env = "TILEGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Optional TOML configuration file (keys as in `Config`).
    #[arg(long, env = "TILEGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Tools for writing the configuration.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Reads a bearer token from stdin and prints the `token_sha256` value for it.
    HashToken,
    /// Reads a password from stdin and prints the `password_hash` value for it (Argon2id).
    HashPassword,
}

/// All settings. In a TOML file, every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Require an `X-Requested-By` header on state-changing requests (Livy's CSRF protection).
    pub csrf_protection: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most sessions alive at once.
    pub max_sessions: usize,
    /// Most client connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Wall-clock limit of one statement, in seconds.
    pub statement_timeout_secs: f64,
    /// Linear memory one statement may use, in MiB.
    pub memory_limit_mib: usize,
    /// Bytes one statement may print, and separately return.
    pub output_limit_bytes: usize,
    /// Wasm call-stack limit, in bytes.
    pub max_wasm_stack_bytes: usize,
    /// Compiled modules kept in memory.
    pub module_cache_entries: usize,
    /// Write the demo dataset `sst` when the data directory has no dataset.
    pub demo_dataset: bool,
    /// Threads for CPU work on tiles (index builds, jobs); 0 = one per core.
    pub workers: usize,
    /// Memory for decoded tiles shared by all jobs, in MiB.
    pub tile_cache_mib: usize,
    /// The rustc that compiles `rust` statements (a path or a name on `PATH`; it needs the
    /// `wasm32-unknown-unknown` target).
    pub rustc: String,
    /// Compiled snippets and the prelude rlib; default `<data_dir>/cache/rust`.
    pub compile_cache_dir: Option<PathBuf>,
    /// Wall-clock limit of one snippet compile, in seconds.
    pub compile_timeout_secs: f64,
    /// Address space one rustc, or one Cranelift compile of a wasm module, may use, in MiB.
    pub compile_memory_mib: u64,
    /// The program that compiles wasm modules in a child process, bounded by the statement's
    /// deadline and cancel, `compile_memory_mib` and CPU time. The `tilegate` binary sets itself;
    /// `None` (an embedded gateway, tests) compiles in the gateway's own process, unbounded.
    #[serde(skip)]
    pub module_compiler: Option<PathBuf>,
    /// Compiles running at once; more wait their turn.
    pub max_compiles: usize,
    /// Compiles of one user (or, without users, one session) running at once; a freed slot goes
    /// to the user with the fewest running.
    pub max_compiles_per_user: usize,
    /// How rustc is isolated from the host: `namespaces` (its own root file system, no network,
    /// an unprivileged user), `user-namespace` (the same through a user namespace even as root),
    /// or `none` (only for a gateway that just trusted users reach, on hosts that refuse
    /// namespaces).
    pub compile_isolation: CompileIsolation,
    /// Rows a `sql` statement's output shows; more are marked as truncated.
    pub sql_max_rows: usize,
    /// Memory the operators of one `sql` query may hold (sorts, joins, aggregates), in MiB;
    /// past it the query fails with `ResourcesExhausted`.
    pub sql_memory_limit_mib: usize,
    /// Memory the operators of one map/reduce job may hold (above all its groups' reduce states),
    /// in MiB; past it the job fails with `MemoryLimit`.
    pub job_memory_limit_mib: usize,
    /// Whether `sql` answers `COUNT`/`MIN`/`MAX`/`SUM`/`AVG` over tiles its filters cover whole
    /// from the tile index, reading only the tiles they cut (off = read every cell).
    pub sql_index_aggregates: bool,
    /// Idle sessions expire after this many seconds unless their `idleTimeout` says otherwise; 0 = never.
    pub session_idle_timeout_secs: u64,
    /// Sessions expire this many seconds after creation (once idle) unless their `ttl` says otherwise; 0 = never.
    pub session_ttl_secs: u64,
    /// Expired sessions stay visible as `dead` this many seconds.
    pub dead_session_retention_secs: u64,
    /// Where batches find snippet files by name; default `<data_dir>/jobs`.
    pub jobs_dir: Option<PathBuf>,
    /// The SQLite database sessions, statements and batches are recorded in (and restored from
    /// after a restart); default `<data_dir>/state/tilegate.sqlite`.
    pub state_db: Option<PathBuf>,
    /// Users (`[[users]]` tables). With any, authentication is on: every route but `/version`,
    /// `/health` and `/ready` needs a bearer token or HTTP Basic credentials.
    pub users: Vec<UserConfig>,
    /// Live sessions (and running batches) one user may have; 0 = no limit. A user's own
    /// `max_sessions` overrides.
    pub max_sessions_per_user: usize,
    /// Statements waiting or running (and running batches) one user may have; 0 = no limit.
    pub max_active_statements_per_user: usize,
    /// `rust` statements one user may have waiting for their module's compile; 0 = no limit.
    pub max_waiting_compiles_per_user: usize,
    /// Memory every session's named values (`session().set`, the kept `result_<id>`) may take
    /// together, in MiB; past it `set` fails and results are not kept as values.
    pub session_values_memory_mib: usize,
    /// Largest statement code (and batch code), in bytes; larger is refused with 413.
    pub max_code_bytes: usize,
    /// CPU seconds one user's statements and batches may use per day (UTC); past it new ones get
    /// 429 until midnight UTC. 0 = no limit. A user's own `cpu_seconds_per_day` overrides.
    pub cpu_seconds_per_day_per_user: u64,
    /// Largest statement result (output data as JSON) kept and returned; 0 = only the sandbox's
    /// `output_limit_bytes`. A user's own `max_result_bytes` overrides.
    pub max_result_bytes: usize,
}

/// `compile_isolation`: how rustc is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompileIsolation {
    /// Mount, network, IPC and UTS namespaces, and `nobody` (as root) or a user namespace.
    #[default]
    Namespaces,
    /// The same through a user namespace even when the gateway is root.
    UserNamespace,
    /// No OS isolation.
    None,
}

/// One user (`[[users]]`). Secrets are stored hashed: `tilegate hash-token` and
/// `tilegate hash-password` print the values to put here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's name: sessions and batches they create belong to it.
    pub name: String,
    /// Admins see and manage every session and batch, may set `proxyUser`, and may register datasets.
    #[serde(default)]
    pub admin: bool,
    /// SHA-256 (hex) of each bearer token of the user.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// Argon2 hash (PHC string) of the user's HTTP Basic password.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Overrides `max_sessions_per_user`.
    #[serde(default)]
    pub max_sessions: Option<usize>,
    /// Overrides `max_active_statements_per_user`.
    #[serde(default)]
    pub max_active_statements: Option<usize>,
    /// Overrides `max_result_bytes`.
    #[serde(default)]
    pub max_result_bytes: Option<usize>,
    /// Overrides `cpu_seconds_per_day_per_user`.
    #[serde(default)]
    pub cpu_seconds_per_day: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8998)),
            data_dir: PathBuf::from("./tilegate-data"),
            csrf_protection: false,
            max_body_bytes: 16 << 20,
            max_sessions: 1000,
            max_connections: 4096,
            statement_timeout_secs: 60.0,
            memory_limit_mib: 256,
            output_limit_bytes: 8 << 20,
            max_wasm_stack_bytes: 512 << 10,
            module_cache_entries: 256,
            demo_dataset: true,
            workers: 0,
            tile_cache_mib: 512,
            rustc: "rustc".into(),
            compile_cache_dir: None,
            compile_timeout_secs: 30.0,
            compile_memory_mib: 2048,
            module_compiler: None,
            max_compiles: 2,
            max_compiles_per_user: 1,
            compile_isolation: CompileIsolation::default(),
            sql_max_rows: 1000,
            sql_memory_limit_mib: 1024,
            job_memory_limit_mib: 1024,
            sql_index_aggregates: true,
            session_idle_timeout_secs: 3600,
            session_ttl_secs: 0,
            dead_session_retention_secs: 600,
            jobs_dir: None,
            state_db: None,
            users: Vec::new(),
            max_sessions_per_user: 50,
            max_active_statements_per_user: 1000,
            max_waiting_compiles_per_user: 16,
            session_values_memory_mib: 2048,
            max_code_bytes: 8 << 20,
            cpu_seconds_per_day_per_user: 0,
            max_result_bytes: 0,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the config file, then flags and environment. Every path comes out
    /// absolute: a relative one in the file is taken from the file's directory, one from a flag,
    /// the environment or the defaults from the current directory. Nothing below the config sees
    /// a relative path (rustc, for one, runs in a directory of its own).
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or parsed, or a value is out of range.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let cwd = std::env::current_dir()
            .map_err(|e| ConfigError::Invalid(format!("cannot read the current directory: {e}")))?;
        let mut config = match &cli.config {
            Some(path) => {
                let mut config = Self::from_file(path)?;
                let file = absolute(&cwd, path);
                config.resolve_paths(file.parent().unwrap_or(&cwd));
                config
            }
            None => Self::default(),
        };
        if let Some(bind) = cli.bind {
            config.bind = bind;
        }
        if let Some(dir) = &cli.data_dir {
            config.data_dir = dir.clone();
        }
        config.resolve_paths(&cwd);
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    /// Makes every relative path absolute against `base` (absolute ones stay as they are).
    /// `rustc` is a path only when it names a directory (`./bin/rustc`); a bare name is looked up
    /// on `PATH`.
    fn resolve_paths(&mut self, base: &Path) {
        self.data_dir = absolute(base, &self.data_dir);
        for path in [&mut self.compile_cache_dir, &mut self.jobs_dir, &mut self.state_db].into_iter().flatten() {
            *path = absolute(base, path);
        }
        if self.rustc.contains(std::path::MAIN_SEPARATOR) {
            self.rustc = absolute(base, Path::new(&self.rustc)).display().to_string();
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = self.statement_timeout_secs.is_finite() && self.statement_timeout_secs > 0.0;
        if !positive {
            return Err(ConfigError::Invalid("statement_timeout_secs must be a positive number".into()));
        }
        if self.memory_limit_mib == 0 || self.memory_limit_mib > 4096 {
            return Err(ConfigError::Invalid("memory_limit_mib must be between 1 and 4096".into()));
        }
        if !(self.compile_timeout_secs.is_finite() && self.compile_timeout_secs > 0.0) {
            return Err(ConfigError::Invalid("compile_timeout_secs must be a positive number".into()));
        }
        if self.compile_memory_mib < 256 || self.max_compiles == 0 || self.max_compiles_per_user == 0 {
            return Err(ConfigError::Invalid(
                "compile_memory_mib must be at least 256, and max_compiles and max_compiles_per_user at least 1".into(),
            ));
        }
        if self.max_connections < 8 {
            return Err(ConfigError::Invalid("max_connections must be at least 8".into()));
        }
        if self.sql_memory_limit_mib == 0 || self.job_memory_limit_mib == 0 {
            return Err(ConfigError::Invalid(
                "sql_memory_limit_mib and job_memory_limit_mib must be at least 1".into(),
            ));
        }
        if self.max_wasm_stack_bytes < 4096 {
            return Err(ConfigError::Invalid("max_wasm_stack_bytes must be at least 4096".into()));
        }
        crate::auth::Users::new(&self.users).map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// Worker threads: `workers`, or one per core.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    }

    /// How `rust` statements are compiled.
    /// The sandbox's settings.
    pub fn sandbox(&self) -> tilegate_sandbox::SandboxConfig {
        let compiler = match &self.module_compiler {
            Some(program) => tilegate_sandbox::ModuleCompiler::Process(tilegate_sandbox::CompileProcess {
                program: program.clone(),
                args: vec![tilegate_sandbox::COMPILE_COMMAND.into()],
                memory_bytes: self.compile_memory_mib << 20,
            }),
            None => tilegate_sandbox::ModuleCompiler::InProcess,
        };
        tilegate_sandbox::SandboxConfig {
            max_wasm_stack: self.max_wasm_stack_bytes,
            module_cache_entries: self.module_cache_entries,
            compiler,
            ..tilegate_sandbox::SandboxConfig::default()
        }
    }

    /// The `rust` compiler's settings.
    pub fn compiler(&self) -> tilegate_compiler::CompilerConfig {
        tilegate_compiler::CompilerConfig {
            rustc: self.rustc.clone(),
            cache_dir: self.compile_cache_dir.clone().unwrap_or_else(|| self.data_dir.join("cache").join("rust")),
            deadline: Duration::from_secs_f64(self.compile_timeout_secs),
            memory_bytes: self.compile_memory_mib << 20,
            max_concurrent: self.max_compiles,
            max_per_user: self.max_compiles_per_user,
            cache_entries: self.module_cache_entries,
            isolation: match self.compile_isolation {
                CompileIsolation::Namespaces => tilegate_compiler::Isolation::Namespaces,
                CompileIsolation::UserNamespace => tilegate_compiler::Isolation::UserNamespace,
                CompileIsolation::None => tilegate_compiler::Isolation::None,
            },
        }
    }

    /// The directory batch `file`s are read from.
    pub fn jobs_dir(&self) -> PathBuf {
        self.jobs_dir.clone().unwrap_or_else(|| self.data_dir.join("jobs"))
    }

    /// The database sessions are recorded in.
    pub fn state_db(&self) -> PathBuf {
        self.state_db.clone().unwrap_or_else(|| self.data_dir.join("state").join("tilegate.sqlite"))
    }

    /// The engine's session settings.
    pub fn engine(&self) -> tilegate_sessions::EngineConfig {
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        tilegate_sessions::EngineConfig {
            max_sessions: self.max_sessions,
            idle_timeout: secs(self.session_idle_timeout_secs),
            ttl: secs(self.session_ttl_secs),
            dead_retention: Duration::from_secs(self.dead_session_retention_secs),
            max_result_bytes: (self.max_result_bytes > 0).then_some(self.max_result_bytes),
            owner_result_bytes: self.users.iter().filter_map(|u| Some((u.name.clone(), u.max_result_bytes?))).collect(),
            ..Default::default()
        }
    }

    /// The statement deadline.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.statement_timeout_secs)
    }
}

/// `path` against `base` when it is relative, with `.` components dropped (no file system
/// access: the path need not exist yet, and symlinks stay as they are).
fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = base.join(path);
    joined.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("tilegate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tilegate.toml");
        std::fs::write(&file, "bind = \"127.0.0.1:9000\"\ncsrf_protection = true\nmemory_limit_mib = 64\n").unwrap();
        let cli = Cli { command: None, bind: None, data_dir: Some("/tmp/x".into()), config: Some(file.clone()) };
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert!(config.csrf_protection);
        assert_eq!(config.memory_limit_mib, 64);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        // Paths in the file are taken from the file's directory; a bare rustc name stays a name.
        std::fs::write(&file, "jobs_dir = \"jobs\"\nstate_db = \"./state/db.sqlite\"\nrustc = \"rustc\"\n").unwrap();
        let config = Config::load(&cli).unwrap();
        assert_eq!(config.jobs_dir, Some(dir.join("jobs")));
        assert_eq!(config.state_db, Some(dir.join("state/db.sqlite")));
        assert_eq!(config.rustc, "rustc");
        // Flags and the defaults are taken from the current directory.
        let cwd = std::env::current_dir().unwrap();
        let relative = Cli { command: None, bind: None, data_dir: Some("./data".into()), config: None };
        let config = Config::load(&relative).unwrap();
        assert_eq!(config.data_dir, cwd.join("data"));
        assert!(config.compiler().cache_dir.is_absolute() && config.state_db().is_absolute());
        let defaults = Config::load(&Cli { command: None, bind: None, data_dir: None, config: None }).unwrap();
        assert_eq!(defaults.data_dir, cwd.join("tilegate-data"));

        std::fs::write(&file, "bogus = 1\n").unwrap();
        assert!(matches!(Config::load(&cli), Err(ConfigError::Parse { .. })));
        std::fs::write(&file, "statement_timeout_secs = -1.0\n").unwrap();
        assert!(matches!(Config::load(&cli), Err(ConfigError::Invalid(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
