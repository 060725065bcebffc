//! The compile-time guard: refuses snippets that reach outside themselves before rustc sees them.
//!
//! rustc runs on the server, so a snippet could read server files or environment at compile time
//! (`include_str!`, `option_env!`), pull in files as modules (`mod x;`, `#[path]`), link or import
//! things (`extern crate`, `extern` blocks, `#[link]`), or change crate settings (`#![...]`). The
//! guard walks every token, including those inside macro bodies, so a `macro_rules!` cannot hide
//! them. What it cannot see (const-eval loops, type bombs, huge outputs) the compile sandbox
//! contains: rustc's lints, a deadline and rlimits (see `rustc.rs`).

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};

/// Macros that read the server's files or environment while compiling.
const READS_SERVER: &[&str] = &["include", "include_str", "include_bytes", "option_env", "env"];

/// Inline assembly: never meaningful in a sandboxed module.
const ASSEMBLY: &[&str] = &["asm", "global_asm", "naked_asm"];

/// Attributes that reach outside the snippet (files, linking, exported symbols, crate settings).
const ATTRIBUTES: &[&str] = &[
    "path",
    "link",
    "link_name",
    "link_section",
    "link_ordinal",
    "no_mangle",
    "export_name",
    "used",
    "wasm_import_module",
    "global_allocator",
    "panic_handler",
    "no_std",
    "no_main",
    "crate_type",
    "crate_name",
    "feature",
    // Lifting rustc's const-evaluation step limit lets a `const` loop run until the deadline.
    "long_running_const_eval",
];

/// Why a snippet was refused: the message and the 1-based line it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Line in the snippet.
    pub line: usize,
    /// What is not allowed and why.
    pub message: String,
}

/// Checks `code`; `Err` names the first construct that reaches outside the snippet.
pub fn check(code: &str) -> Result<(), Refusal> {
    let tokens: TokenStream = code
        .parse()
        .map_err(|e: proc_macro2::LexError| Refusal { line: e.span().start().line, message: format!("{e}") })?;
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let result = check_trees(&tokens);
    proc_macro2::extra::invalidate_current_thread_spans();
    result
}

fn check_trees(trees: &[TokenTree]) -> Result<(), Refusal> {
    for (i, tree) in trees.iter().enumerate() {
        let next = trees.get(i + 1);
        let after = trees.get(i + 2);
        match tree {
            TokenTree::Group(group) => {
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                check_trees(&inner)?;
            }
            TokenTree::Ident(ident) => {
                let name = ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name);
                let bang = is_punct(next, '!');
                if READS_SERVER.contains(&name) && (name != "env" || bang || is_ident(next, "as")) {
                    return refuse(
                        ident.span(),
                        format!(
                            "`{name}!` reads the server's files or environment at compile time; snippets cannot use it"
                        ),
                    );
                }
                if ASSEMBLY.contains(&name) && bang {
                    return refuse(ident.span(), format!("`{name}!` (inline assembly) is not allowed"));
                }
                if name == "extern" {
                    if is_ident(next, "crate") {
                        return refuse(
                            ident.span(),
                            "`extern crate` is not allowed: the prelude (`use prelude::*`) and std are available",
                        );
                    }
                    let block = if matches!(next, Some(TokenTree::Literal(_))) { after } else { next };
                    if matches!(block, Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace) {
                        return refuse(
                            ident.span(),
                            "`extern` blocks are not allowed: a snippet imports nothing from the host",
                        );
                    }
                }
                if name == "mod" && matches!(next, Some(TokenTree::Ident(_))) && is_punct(after, ';') {
                    return refuse(
                        ident.span(),
                        "`mod name;` loads a file; write the module inline: `mod name { ... }`",
                    );
                }
            }
            TokenTree::Punct(p) if p.as_char() == '#' => {
                if is_punct(next, '!') {
                    return refuse(
                        p.span(),
                        "inner attributes (`#![...]`) are not allowed in a snippet; put attributes on items",
                    );
                }
                if let Some(TokenTree::Group(attr)) = next
                    && attr.delimiter() == Delimiter::Bracket
                    && let Some(name) = banned_attribute(attr.stream())
                {
                    return refuse(p.span(), format!("the attribute `#[{name}]` is not allowed in a snippet"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The first banned attribute name anywhere in an attribute (so `cfg_attr(.., path = ..)` and
/// `unsafe(no_mangle)` are caught too).
fn banned_attribute(stream: TokenStream) -> Option<String> {
    stream.into_iter().find_map(|tree| match tree {
        TokenTree::Ident(ident) => {
            let name = ident.to_string();
            ATTRIBUTES.contains(&name.as_str()).then_some(name)
        }
        TokenTree::Group(group) => banned_attribute(group.stream()),
        _ => None,
    })
}

fn is_punct(tree: Option<&TokenTree>, c: char) -> bool {
    matches!(tree, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

fn is_ident(tree: Option<&TokenTree>, name: &str) -> bool {
    matches!(tree, Some(TokenTree::Ident(i)) if i == name)
}

fn refuse(span: Span, message: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal { line: span.start().line, message: message.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str) -> String {
        check(code).expect_err(code).message
    }

    #[test]
    fn ordinary_snippets_pass() {
        for code in [
            "6 * 7",
            "fn main() { println!(\"{}\", 6 * 7); }",
            "let env = 3; env + 1",
            "struct Path; #[derive(Debug, Clone)] struct S { x: f64 } mod m { pub fn f() {} }",
            "extern \"C\" fn f() {} #[allow(dead_code)] fn g() {}",
            "let s = \"include_str!(\\\"/etc/passwd\\\")\"; s.len()",
            "std::env::var(\"HOME\").is_ok()",
        ] {
            assert_eq!(check(code), Ok(()), "{code}");
        }
    }

    #[test]
    fn reaching_outside_is_refused_with_its_line() {
        assert!(refused("include_str!(\"/etc/hostname\")").contains("include_str!"));
        assert!(refused("option_env!(\"HOME\")").contains("option_env!"));
        assert!(refused("env!(\"HOME\")").contains("env!"));
        assert!(refused("use std::env as e; e!(\"HOME\")").contains("env!"));
        assert!(refused("use std::include_bytes as b;").contains("include_bytes"));
        assert!(refused("macro_rules! m { () => { core::include!(\"/etc/passwd\") } }").contains("include!"));
        assert!(refused("r#include_str!(\"/etc/hostname\")").contains("include_str"));
        assert!(refused("mod secrets;").contains("mod name;"));
        assert!(refused("#[path = \"/etc/passwd\"] mod m {}").contains("#[path]"));
        assert!(refused("#[cfg_attr(all(), path = \"/x\")] mod m {}").contains("#[path]"));
        assert!(refused("#[unsafe(no_mangle)] fn sbx_main() {}").contains("no_mangle"));
        assert!(refused("extern crate std as s;").contains("extern crate"));
        assert!(refused("unsafe extern \"C\" { fn open(); }").contains("extern"));
        assert!(refused("#![recursion_limit = \"100000\"]").contains("inner attributes"));
        assert!(refused("core::arch::asm!(\"nop\")").contains("assembly"));
        assert!(refused("#[allow(long_running_const_eval)] const X: u8 = 1;").contains("long_running_const_eval"));
        let refusal = check("let a = 1;\nlet b = 2;\ninclude_bytes!(\"/etc/shadow\")").unwrap_err();
        assert_eq!(refusal.line, 3);
    }

    #[test]
    fn unlexable_code_is_refused_not_passed_on() {
        assert!(check("let s = \"unterminated;").is_err());
    }
}
