//! What the host gives a guest: per-call state, the memory cap and the `sbx` imports.

use wasmtime::{Caller, Linker, ResourceLimiter};

/// The imports the sandbox provides, for error messages.
pub(crate) const ALLOWED_IMPORTS: &str = "`sbx::print(ptr: i32, len: i32)` and `sbx::panic(ptr: i32, len: i32)`";

/// The longest panic message kept; the rest is cut.
const MAX_PANIC_MESSAGE: usize = 64 << 10;

/// Why the host stopped a guest. Raised inside wasmtime as an error and recognised by downcasting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stop {
    #[error("deadline passed")]
    Timeout,
    #[error("cancelled")]
    Cancelled,
    #[error("output limit")]
    OutputLimit { size: usize },
    #[error("guest panicked: {0}")]
    Panic(String),
}

/// State of one call: lives in the `Store` and dies with it.
pub(crate) struct HostState {
    pub(crate) memory: MemoryCap,
    pub(crate) printed: Vec<u8>,
    pub(crate) output_limit: usize,
}

impl HostState {
    pub(crate) fn new(memory_bytes: usize, output_limit: usize) -> Self {
        Self { memory: MemoryCap { limit: memory_bytes, hit: false }, printed: Vec::new(), output_limit }
    }
}

/// Caps linear memory and remembers whether the cap was hit, so a guest abort that follows a
/// refused `memory.grow` can be reported as a memory limit rather than a bare trap.
pub(crate) struct MemoryCap {
    pub(crate) limit: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // A table element is a pointer; a million is 8 MiB, far beyond what real code needs.
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}

/// Registers the `sbx` imports. Nothing else is ever linked: no WASI, no clock, no randomness.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sbx", "print", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let len = len as u32 as usize;
        let size = caller.data().printed.len().saturating_add(len);
        if size > caller.data().output_limit {
            return Err(wasmtime::Error::new(Stop::OutputLimit { size }));
        }
        let bytes = guest_bytes(&mut caller, ptr, len)?;
        caller.data_mut().printed.extend_from_slice(&bytes);
        Ok(())
    })?;
    linker.func_wrap("sbx", "panic", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let len = (len as u32 as usize).min(MAX_PANIC_MESSAGE);
        let bytes = guest_bytes(&mut caller, ptr, len)?;
        let message = String::from_utf8_lossy(&bytes).into_owned();
        Err::<(), _>(wasmtime::Error::new(Stop::Panic(message)))
    })?;
    Ok(())
}

/// Copies `len` bytes at `ptr` out of the caller's exported memory.
fn guest_bytes(caller: &mut Caller<'_, HostState>, ptr: i32, len: usize) -> wasmtime::Result<Vec<u8>> {
    let memory = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the module calls an `sbx` import but exports no `memory`"))?;
    let start = ptr as u32 as usize;
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg(format!("pointer {start}+{len} is outside the module's memory")))
}
