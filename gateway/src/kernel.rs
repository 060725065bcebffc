//! The kernel the gateway wires into the engine: `wasm` statements run in the sandbox; `rust` and
//! `sql` answer with a clear error until their issues land.

use std::sync::Arc;

use serde_json::{Value, json};
use tilegate_api::Language;
use tilegate_engine::{Data, Failure, Job, Kernel, RunContext};
use tilegate_sandbox::{Limits, Sandbox, decode_source};

/// Runs statements in the wasm sandbox.
pub struct SandboxKernel {
    sandbox: Arc<Sandbox>,
    limits: Limits,
}

impl SandboxKernel {
    /// A kernel running every statement under `limits`.
    pub fn new(sandbox: Arc<Sandbox>, limits: Limits) -> Self {
        Self { sandbox, limits }
    }

    fn run_wasm(&self, job: &Job, ctx: &RunContext) -> Result<Data, tilegate_sandbox::Error> {
        let bytes = decode_source(&job.code)?;
        let program = self.sandbox.compile(&bytes)?;
        // What `sbx_main` receives: where it runs. Documented in sandbox/ABI.md.
        let input = json!({ "session": job.session_id, "statement": job.statement_id }).to_string();
        let out = self.sandbox.run(&program, input.as_bytes(), &self.limits, ctx.cancel_flag())?;
        Ok(output_data(out.printed, out.result))
    }
}

impl Kernel for SandboxKernel {
    fn execute(&self, job: &Job, ctx: &RunContext) -> Result<Data, Failure> {
        match job.language {
            Language::Wasm => self.run_wasm(job, ctx).map_err(|e| Failure {
                ename: e.name().to_owned(),
                evalue: e.to_string(),
                traceback: e.backtrace().to_vec(),
            }),
            Language::Rust | Language::Sql => Err(Failure::new(
                "UnsupportedKind",
                format!(
                    "`{}` statements are not available in this tilegate build yet; `wasm` statements are. \
                     Choose the language with the statement's `kind`, a first line `%wasm`, or the session conf \
                     `tilegate.kind`.",
                    job.language
                ),
            )),
        }
    }
}

/// Livy output data: `text/plain` is what was printed followed by the result's text;
/// `application/json` is the result, when there is one.
fn output_data(printed: String, result: Value) -> Data {
    let mut text = printed;
    let rendered = match &result {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    if let Some(rendered) = rendered {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&rendered);
    }
    let mut data = Data::from([("text/plain".to_owned(), Value::String(text))]);
    if !result.is_null() {
        data.insert("application/json".to_owned(), result);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_joins_printed_and_result() {
        let data = output_data("hello\n".into(), json!(42));
        assert_eq!(data["text/plain"], "hello\n42");
        assert_eq!(data["application/json"], 42);
        let data = output_data("only printed".into(), Value::Null);
        assert_eq!(data["text/plain"], "only printed");
        assert!(!data.contains_key("application/json"));
    }
}
