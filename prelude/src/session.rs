//! The session a statement runs in: its named JSON values, kept across statements, and its
//! description. `spark` and `sqlContext` name it too, so the bootstrap statements Livy clients
//! such as sparkmagic send (`spark`, then `sqlContext`) succeed and print what the session is.
//!
//! ```ignore
//! session().set("threshold", 28.5);                 // statement 1
//! let t = session().get("threshold").and_then(|j| j.as_f64()).unwrap_or(28.0);   // statement 2
//! ```

use std::cell::RefCell;

use crate::abi::{self, IntoOutput};
use crate::json::Json;
use crate::value::json_string;

thread_local! {
    /// What `sbx_main` was given: `{"session": id, "statement": id}`.
    static WHERE: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn enter(input: &[u8]) {
    WHERE.with(|w| *w.borrow_mut() = String::from_utf8_lossy(input).into_owned());
}

/// The statement's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    _private: (),
}

/// The session handle under the name sparkmagic's bootstrap evaluates.
#[allow(non_upper_case_globals)]
pub const spark: Session = Session { _private: () };

/// The session handle under the name sparkmagic's fallback bootstrap evaluates.
#[allow(non_upper_case_globals)]
pub const sqlContext: Session = Session { _private: () };

/// The statement's session.
pub fn session() -> Session {
    Session { _private: () }
}

impl Session {
    /// The session id (`None` outside a gateway).
    pub fn id(&self) -> Option<u64> {
        number_field("session")
    }

    /// The running statement's id within the session.
    pub fn statement(&self) -> Option<u64> {
        number_field("statement")
    }

    /// Keeps `value` (anything a statement can return: numbers, strings, `Rows`, `Stats`,
    /// records, ...) as JSON under `name`, for this session's later statements and their maps.
    ///
    /// # Panics
    /// Inside a map or reduce (only the statement may change its session), or when the value is
    /// over the output limit: the statement fails with `SessionError`.
    pub fn set(&self, name: &str, value: impl IntoOutput) {
        let json = value.into_output();
        abi::host_session_set(name, if json.is_empty() { b"null" } else { &json });
    }

    /// The value kept under `name` by an earlier statement, or `None`. Maps and reduces may call
    /// this too; to parse a large value once per worker rather than once per tile, keep it in a
    /// `thread_local!` or `std::sync::OnceLock`.
    pub fn get(&self, name: &str) -> Option<Json> {
        let bytes = abi::host_session_get(name)?;
        Json::parse(&String::from_utf8_lossy(&bytes)).ok()
    }
}

fn number_field(name: &str) -> Option<u64> {
    WHERE.with(|w| {
        let w = w.borrow();
        let at = w.find(&format!("\"{name}\":"))? + name.len() + 3;
        let digits: String = w[at..].chars().skip_while(|c| *c == ' ').take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

impl IntoOutput for Session {
    fn into_output(self) -> Vec<u8> {
        let id = self.id().map_or_else(|| "?".to_owned(), |id| id.to_string());
        let text = format!(
            "tilegate session {id}: a Livy-compatible session whose statements are Rust snippets (`rust`), \
             WebAssembly modules (`wasm`) or SQL (`sql`) over the gateway's shared datasets (GET /datasets)"
        );
        let mut out = String::new();
        json_string(&mut out, &text);
        out.into_bytes()
    }
}
