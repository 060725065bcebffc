//! The module's side of the sandbox ABI (see `sandbox/ABI.md`): buffers, entry points, host imports.

use std::cell::RefCell;

use crate::job::{Rows, Trampoline};
use crate::value::Value;

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "sbx")]
    unsafe extern "C" {
        pub fn print(ptr: *const u8, len: usize);
        pub fn panic(ptr: *const u8, len: usize);
        pub fn run_job(ptr: *const u8, len: usize) -> u64;
        pub fn session_get(ptr: *const u8, len: usize) -> u64;
        pub fn session_set(ptr: *const u8, len: usize, json_ptr: *const u8, json_len: usize);
    }
}

thread_local! {
    /// The current call's input (u64 words, so it is 8-aligned).
    static INPUT: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// The last call's output; kept alive until the next call.
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `sbx_prepare`: an 8-aligned input buffer of `len` bytes (the previous one is reused).
pub fn prepare(len: usize) -> *mut u8 {
    INPUT.with(|input| {
        let mut input = input.borrow_mut();
        // Grow only: the host overwrites the bytes it uses, so there is no need to zero a tile's
        // worth of memory on every call.
        let words = len.div_ceil(8);
        if input.len() < words {
            input.resize(words, 0);
        }
        input.as_mut_ptr().cast()
    })
}

/// `sbx_alloc`: `len` bytes the host fills and hands over (the results of `sbx.run_job`).
pub fn alloc(len: usize) -> *mut u8 {
    let mut bytes = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(len));
    bytes.as_mut_ptr()
}

/// Keeps `bytes` as the call's output and returns `ptr << 32 | len` for the host.
pub(crate) fn output(bytes: Vec<u8>) -> u64 {
    OUTPUT.with(|out| {
        let mut out = out.borrow_mut();
        *out = bytes;
        ((out.as_ptr() as u64) << 32) | out.len() as u64
    })
}

/// Reports panics to the host (`sbx.panic`) from now on.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|info| host_panic(&info.to_string()))));
}

/// `sbx_main`: runs the statement's main function and returns its JSON.
///
/// # Safety
/// `ptr` must point at `len` readable bytes (the host's prepared buffer).
pub unsafe fn main(ptr: *const u8, len: usize, run: impl FnOnce() -> Vec<u8>) -> u64 {
    install_panic_hook();
    // SAFETY: per the contract above.
    let input = if ptr.is_null() || len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(ptr, len) } };
    crate::session::enter(input);
    output(run())
}

/// `sbx_invoke`: calls `func` through `tramp` on input `a` (at `ptr`) and `b` (at `ptr` + `a_len`
/// rounded up to 8).
///
/// # Safety
/// `ptr` must point at `round8(a_len) + b_len` readable bytes (the host's prepared buffer), and
/// `tramp`/`func` must be the table indices a job spec carried.
pub unsafe fn invoke(tramp: usize, func: usize, ptr: *const u8, a_len: usize, b_len: usize) -> u64 {
    install_panic_hook();
    // SAFETY: per the contract above.
    let (a, b, tramp) = unsafe {
        let a = std::slice::from_raw_parts(ptr, a_len);
        let b = std::slice::from_raw_parts(ptr.add(a_len.div_ceil(8) * 8), b_len);
        (a, b, std::mem::transmute::<usize, Trampoline>(tramp))
    };
    output(tramp(func, a, b))
}

/// The last call's output (off wasm, a pointer does not fit the packed `ptr << 32 | len`).
#[cfg(test)]
pub(crate) fn last_output() -> Vec<u8> {
    OUTPUT.with(|out| out.borrow().clone())
}

pub(crate) fn host_print(bytes: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: a valid slice of our memory.
    unsafe {
        host::print(bytes.as_ptr(), bytes.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(bytes);
    }
}

fn host_panic(message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: a valid slice of our memory.
    unsafe {
        host::panic(message.as_ptr(), message.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{message}");
}

/// Runs a job on the host; returns the result bytes it placed in our memory (via `sbx_alloc`).
pub(crate) fn host_run_job(spec: &[u8]) -> Vec<u8> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: the host allocated `len` bytes at `ptr` with `sbx_alloc` and filled them.
        unsafe {
            let packed = host::run_job(spec.as_ptr(), spec.len());
            let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
            Vec::from_raw_parts(ptr as *mut u8, len, len)
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = spec;
        panic!("jobs run only inside the tilegate gateway")
    }
}

/// The session's JSON under `name`, if any.
pub(crate) fn host_session_get(name: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: a valid slice of our memory; a found value was placed by the host in memory
        // from `sbx_alloc` of exactly `len` bytes.
        unsafe {
            let packed = host::session_get(name.as_ptr(), name.len());
            if packed == u64::MAX {
                return None;
            }
            let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
            Some(Vec::from_raw_parts(ptr as *mut u8, len, len))
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = name;
        None
    }
}

/// Keeps `json` under `name` in the session (the host traps the statement if it refuses).
pub(crate) fn host_session_set(name: &str, json: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: valid slices of our memory.
    unsafe {
        host::session_set(name.as_ptr(), name.len(), json.as_ptr(), json.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (name, json);
        panic!("session values exist only inside the tilegate gateway")
    }
}

/// What a statement's main function (or a `rust` statement's final expression) may return.
#[diagnostic::on_unimplemented(
    message = "a statement's result must become JSON, and `{Self}` cannot",
    label = "this is the statement's result",
    note = "numbers, strings, bools, `Vec`s, tuples, `Option`s, `Stats`, `Rows` and types declared with `record!` can; end the statement with `;` to return nothing"
)]
pub trait IntoOutput {
    /// The statement's JSON result (empty for none).
    fn into_output(self) -> Vec<u8>;
}

impl IntoOutput for Rows {
    fn into_output(self) -> Vec<u8> {
        self.json().as_bytes().to_vec()
    }
}

impl IntoOutput for () {
    fn into_output(self) -> Vec<u8> {
        Vec::new()
    }
}

/// The never type (`panic!()`, `loop {}` as a cell's last expression), named on stable Rust
/// through a function pointer's output.
pub trait Returns {
    /// What the function returns.
    type Output;
}

impl<T> Returns for fn() -> T {
    type Output = T;
}

/// `!`.
pub type Never = <fn() -> ! as Returns>::Output;

impl IntoOutput for Never {
    fn into_output(self) -> Vec<u8> {
        self
    }
}

impl IntoOutput for &str {
    fn into_output(self) -> Vec<u8> {
        let mut out = String::new();
        crate::value::json_string(&mut out, self);
        out.into_bytes()
    }
}

impl<T: Value> IntoOutput for T {
    fn into_output(self) -> Vec<u8> {
        let mut out = String::new();
        self.to_json(&mut out);
        out.into_bytes()
    }
}

/// Exports the ABI from the module's root, with `main` as the statement's entry point.
#[macro_export]
macro_rules! export_main {
    ($main:path) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn sbx_prepare(len: usize) -> *mut u8 {
            $crate::abi::prepare(len)
        }
        #[unsafe(no_mangle)]
        pub extern "C" fn sbx_alloc(len: usize) -> *mut u8 {
            $crate::abi::alloc(len)
        }
        /// # Safety
        /// Called by the host only, with a buffer from `sbx_prepare`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn sbx_main(ptr: *const u8, len: usize) -> u64 {
            // SAFETY: forwarded contract.
            unsafe { $crate::abi::main(ptr, len, || $crate::abi::IntoOutput::into_output($main())) }
        }
        /// # Safety
        /// Called by the host only, with a buffer from `sbx_prepare`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn sbx_invoke(
            tramp: usize,
            func: usize,
            ptr: *const u8,
            a_len: usize,
            b_len: usize,
        ) -> u64 {
            // SAFETY: forwarded contract.
            unsafe { $crate::abi::invoke(tramp, func, ptr, a_len, b_len) }
        }
    };
}
