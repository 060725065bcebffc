//! Why a module was refused or a call returned no value.

use std::time::Duration;

/// Why a module was refused or a call returned no value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The code is neither WAT text, a wasm binary, nor base64 of one.
    #[error("{0}")]
    Decode(String),
    /// The module failed to parse or validate.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module imports something the sandbox does not provide (there is no WASI and no ambient import).
    #[error("module imports `{module}::{name}`, but the sandbox provides only {allowed}")]
    ForbiddenImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
        /// What the sandbox provides.
        allowed: &'static str,
    },
    /// The module has no entry point the caller asked for, or it has the wrong signature.
    #[error("{0}")]
    MissingEntry(String),
    /// The call ran past its deadline.
    #[error("time limit of {} s exceeded (the gateway's `statement_timeout_secs`)", .0.as_secs_f64())]
    Timeout(Duration),
    /// Compiling the module ran past a limit (time, memory or CPU).
    #[error("{0}")]
    CompileLimit(String),
    /// The call was cancelled by its caller.
    #[error("cancelled")]
    Cancelled,
    /// The module tried to grow its memory past the cap.
    #[error(
        "memory limit of {limit} bytes exceeded (the gateway's `memory_limit_mib`): hold less at once, e.g. a smaller selection or fewer keys"
    )]
    MemoryLimit {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The module produced (printed or returned) more bytes than allowed.
    #[error(
        "output of at least {size} bytes exceeds the limit of {limit} bytes (the gateway's `output_limit_bytes`): print or return less, e.g. for a job a smaller bbox or a coarser key"
    )]
    OutputLimit {
        /// Bytes produced so far.
        size: usize,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The wasm call stack overflowed.
    #[error("call stack exhausted (limit {limit} bytes)")]
    StackOverflow {
        /// The engine's stack cap, in bytes.
        limit: usize,
    },
    /// The guest panicked and reported its message through `sbx.panic`.
    #[error("{message}")]
    Panic {
        /// The panic message, as the guest formatted it.
        message: String,
        /// The wasm backtrace, one frame per line.
        backtrace: Vec<String>,
    },
    /// Any other trap (unreachable, out-of-bounds access, division by zero, ...).
    #[error("{message}")]
    Trap {
        /// The trap, as wasmtime describes it.
        message: String,
        /// The wasm backtrace, one frame per line.
        backtrace: Vec<String>,
    },
    /// The module broke the bytes-in/bytes-out ABI (bad pointer, result not JSON, ...).
    #[error("{0}")]
    Abi(String),
    /// A job the module started with `sbx.run_job` failed; `ename` says how.
    #[error("{message}")]
    Job {
        /// Kind of failure, e.g. `JobError`, `Cancelled`, `Timeout`, `Panic`.
        ename: String,
        /// What happened.
        message: String,
    },
    /// The sandbox itself could not be set up.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
}

impl Error {
    /// A short name for the kind of failure, used as Livy's `ename`.
    pub fn name(&self) -> &str {
        match self {
            Self::Job { ename, .. } => ename,
            Self::Decode(_) => "DecodeError",
            Self::InvalidModule(_) => "InvalidModule",
            Self::ForbiddenImport { .. } => "ForbiddenImport",
            Self::MissingEntry(_) => "MissingEntry",
            Self::Timeout(_) => "Timeout",
            Self::CompileLimit(_) => "CompileLimit",
            Self::Cancelled => "Cancelled",
            Self::MemoryLimit { .. } => "MemoryLimit",
            Self::OutputLimit { .. } => "OutputLimit",
            Self::StackOverflow { .. } => "StackOverflow",
            Self::Panic { .. } => "Panic",
            Self::Trap { .. } => "Trap",
            Self::Abi(_) => "AbiError",
            Self::Setup(_) => "SandboxError",
        }
    }

    /// The wasm backtrace, where the failure happened inside the guest.
    pub fn backtrace(&self) -> &[String] {
        match self {
            Self::Panic { backtrace, .. } | Self::Trap { backtrace, .. } => backtrace,
            _ => &[],
        }
    }
}
