//! A snippet as a notebook cell: items (`fn`, `struct`, `use`, `impl`, ...) go to the crate root,
//! where later cells of the session see them; statements and the final expression run once, in
//! the cell's entry function, and the final expression is the result.
//!
//! The cell itself compiles as one block (its items are local items there), and for later cells
//! its items are written at the crate root with the statements blanked. Both keep every item and
//! statement on its original line and column, so rustc's diagnostics and panic locations carry the
//! user's line numbers without any mapping.

use std::collections::HashSet;
use std::ops::Range;

use syn::spanned::Spanned;

/// One parsed cell.
#[derive(Debug, Clone)]
pub struct Cell {
    code: String,
    items: Vec<Item>,
    calls_main: bool,
}

/// A crate-level item of a cell and the names it defines.
#[derive(Debug, Clone)]
struct Item {
    /// `name:X` for what it defines (value or type namespace), `impl:X` for an impl of `X`.
    keys: Vec<String>,
    range: Range<usize>,
}

struct Statements(Vec<syn::Stmt>);

impl syn::parse::Parse for Statements {
    fn parse(input: syn::parse::ParseStream) -> syn::Result<Self> {
        syn::Block::parse_within(input).map(Self)
    }
}

impl Cell {
    /// Finds the cell's crate-level items. Code syn cannot parse has none; rustc then reports
    /// the error in its own words.
    pub fn parse(code: &str) -> Self {
        let parsed = syn::parse_str::<Statements>(code);
        let cell = match parsed {
            Ok(Statements(stmts)) => {
                let lines = LineStarts::new(code);
                let mut items = Vec::new();
                let mut statements = 0;
                for stmt in &stmts {
                    match item_keys(stmt) {
                        Some(keys) => items.push(Item { keys, range: lines.range(stmt.span()) }),
                        None => statements += 1,
                    }
                }
                let defines_main = items.iter().any(|i| i.keys.iter().any(|k| k == "name:main"));
                Self { code: code.to_owned(), items, calls_main: defines_main && statements == 0 }
            }
            Err(_) => Self { code: code.to_owned(), items: Vec::new(), calls_main: false },
        };
        proc_macro2::extra::invalidate_current_thread_spans();
        cell
    }

    /// The cell's code as the user wrote it.
    pub fn source(&self) -> &str {
        &self.code
    }

    /// The names this cell defines at the crate root.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.items.iter().flat_map(|i| i.keys.iter()).filter_map(|k| k.strip_prefix("name:"))
    }

    /// Whether the cell has any crate-level item (worth remembering for later cells).
    pub fn has_items(&self) -> bool {
        !self.items.is_empty()
    }

    /// The crate-level part: the items, except those whose names are in `redefined` (a later
    /// cell defines them again), on their original lines; everything else blanked.
    pub fn items_file(&self, redefined: &HashSet<&str>) -> String {
        let kept = |item: &&Item| {
            !item.keys.iter().any(|k| {
                let name = k.strip_prefix("name:").or_else(|| k.strip_prefix("impl:")).unwrap_or(k);
                redefined.contains(name)
            })
        };
        let keep: Vec<Range<usize>> = self.items.iter().filter(kept).map(|i| i.range.clone()).collect();
        blank_outside(&self.code, &keep)
    }

    /// The entry function's body: the whole cell as a block, on its original lines (its items are
    /// local items there), ending with the final expression, or with a call to `main()` when the
    /// cell only defines items including `fn main`.
    pub fn body_file(&self) -> String {
        let mut body = self.code.clone();
        // The opening brace takes the first blank character, so columns stay put.
        match body.char_indices().find(|(_, c)| *c == ' ') {
            Some((at, _)) if body[..at].trim().is_empty() => body.replace_range(at..at + 1, "{"),
            _ => body.insert(0, '{'),
        }
        if self.calls_main {
            body.push_str("\nmain()");
        }
        body.push_str("\n}\n");
        body
    }
}

/// `code` with every character outside `keep` replaced by a space (newlines stay).
fn blank_outside(code: &str, keep: &[Range<usize>]) -> String {
    code.char_indices().map(|(i, c)| if c == '\n' || keep.iter().any(|r| r.contains(&i)) { c } else { ' ' }).collect()
}

/// The keys of a crate-level item, or `None` for a statement.
fn item_keys(stmt: &syn::Stmt) -> Option<Vec<String>> {
    use syn::Item;
    let item = match stmt {
        syn::Stmt::Item(item) => item,
        syn::Stmt::Macro(m) if m.mac.path.is_ident("sql_function") || m.mac.path.is_ident("sql_aggregate") => {
            // One SQL function per name, scalar or aggregate: a later declaration replaces an
            // earlier one of either kind.
            let name = m.mac.tokens.clone().into_iter().next().map(|t| t.to_string()).unwrap_or_default();
            return Some(vec![format!("name:sbx_sql__{name}")]);
        }
        syn::Stmt::Macro(m) if ITEM_MACROS.iter().any(|name| m.mac.path.is_ident(name)) => {
            return Some(declared_names(m.mac.tokens.clone()));
        }
        _ => return None,
    };
    let name = |ident: &syn::Ident| vec![format!("name:{}", ident.to_string().trim_start_matches("r#"))];
    Some(match item {
        Item::Fn(i) => name(&i.sig.ident),
        Item::Struct(i) => name(&i.ident),
        Item::Enum(i) => name(&i.ident),
        Item::Union(i) => name(&i.ident),
        Item::Const(i) => name(&i.ident),
        Item::Static(i) => name(&i.ident),
        Item::Type(i) => name(&i.ident),
        Item::Trait(i) => name(&i.ident),
        Item::TraitAlias(i) => name(&i.ident),
        Item::Mod(i) => name(&i.ident),
        Item::Macro(i) => i.ident.as_ref().map(name).unwrap_or_default(),
        Item::Use(i) => {
            let mut keys = Vec::new();
            use_names(&i.tree, &mut keys);
            keys
        }
        Item::Impl(i) => match &*i.self_ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| vec![format!("impl:{}", s.ident)]).unwrap_or_default(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    })
}

/// Macros whose invocations in statement position declare items (kept for later cells).
const ITEM_MACROS: &[&str] = &["macro_rules", "record", "thread_local", "sql_function", "sql_aggregate"];

/// `name:X` for every `struct X` / `enum X` / `static X` inside an item macro's tokens.
fn declared_names(tokens: proc_macro2::TokenStream) -> Vec<String> {
    let tokens: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
    tokens
        .windows(2)
        .filter_map(|pair| match pair {
            [proc_macro2::TokenTree::Ident(kw), proc_macro2::TokenTree::Ident(name)]
                if kw == "struct" || kw == "enum" || kw == "static" =>
            {
                Some(format!("name:{name}"))
            }
            _ => None,
        })
        .collect()
}

fn use_names(tree: &syn::UseTree, keys: &mut Vec<String>) {
    match tree {
        syn::UseTree::Path(p) => use_names(&p.tree, keys),
        syn::UseTree::Name(n) if n.ident != "self" => keys.push(format!("name:{}", n.ident)),
        syn::UseTree::Rename(r) => keys.push(format!("name:{}", r.rename)),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_names(t, keys)),
        _ => {}
    }
}

/// Byte offsets of line starts, to turn span line/column (columns count characters) into ranges.
struct LineStarts<'a> {
    code: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineStarts<'a> {
    fn new(code: &'a str) -> Self {
        let starts = std::iter::once(0).chain(code.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { code, starts }
    }

    fn offset(&self, at: proc_macro2::LineColumn) -> usize {
        let Some(&start) = self.starts.get(at.line.saturating_sub(1)) else { return self.code.len() };
        self.code[start..].char_indices().nth(at.column).map_or(self.code.len(), |(i, _)| start + i)
    }

    fn range(&self, span: proc_macro2::Span) -> Range<usize> {
        self.offset(span.start())..self.offset(span.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> HashSet<&'static str> {
        HashSet::new()
    }

    #[test]
    fn items_and_statements_keep_their_lines_and_columns() {
        let code = "let x = 6;\nfn helper(a: i32) -> i32 { a * 2 }\n  helper(x) * 7";
        let cell = Cell::parse(code);
        assert_eq!(
            cell.items_file(&none()),
            format!("{}\nfn helper(a: i32) -> i32 {{ a * 2 }}\n{}", " ".repeat(10), " ".repeat(15))
        );
        assert_eq!(cell.body_file(), format!("{{{code}\n}}\n"));
        assert_eq!(cell.names().collect::<Vec<_>>(), ["helper"]);
    }

    #[test]
    fn the_brace_takes_a_leading_blank() {
        let cell = Cell::parse(" let a = 1; a");
        assert_eq!(cell.body_file(), "{let a = 1; a\n}\n");
    }

    #[test]
    fn a_cell_of_items_with_main_calls_it() {
        let cell = Cell::parse("fn main() { println!(\"{}\", 6 * 7); }");
        assert!(cell.body_file().ends_with("\nmain()\n}\n"));
        let cell = Cell::parse("fn main() -> i32 { 1 }\nmain() + 1");
        assert!(!cell.body_file().contains("\nmain()\n}"));
    }

    #[test]
    fn redefined_names_and_their_impls_are_dropped() {
        let cell = Cell::parse(
            "struct A;\nimpl A { fn f(&self) {} }\nuse std::collections::{HashMap, BTreeMap as B};\nfn keep() {}",
        );
        let mut names: Vec<&str> = cell.names().collect();
        names.sort_unstable();
        assert_eq!(names, ["A", "B", "HashMap", "keep"]);
        let text = cell.items_file(&HashSet::from(["A"]));
        assert!(!text.contains("struct A") && !text.contains("impl A") && text.contains("fn keep"));
    }

    #[test]
    fn item_macros_are_items() {
        let cell = Cell::parse(
            "record! { struct Warm { n: u64 } }\nmacro_rules! twice { ($e:expr) => { $e * 2 } }\nprintln!{\"x\"}",
        );
        assert_eq!(cell.names().collect::<Vec<_>>(), ["Warm", "twice"]);
        let text = cell.items_file(&none());
        assert!(text.contains("record!") && text.contains("macro_rules!") && !text.contains("println"));
    }

    #[test]
    fn sql_functions_and_aggregates_share_one_name_each() {
        let cell = Cell::parse("sql_function!(f(f64) -> f64);\nsql_aggregate!(g(f64, f64) -> f64 = G);");
        assert_eq!(cell.names().collect::<Vec<_>>(), ["sbx_sql__f", "sbx_sql__g"]);
        // An aggregate `f` in a later cell replaces the scalar `f`.
        let later = Cell::parse("sql_aggregate!(f(f64) -> f64 = F);");
        let redefined: HashSet<&str> = later.names().collect();
        let text = cell.items_file(&redefined);
        assert!(!text.contains("sql_function!") && text.contains("sql_aggregate!(g"), "{text}");
    }

    #[test]
    fn unparsable_code_goes_to_the_body_for_rustc_to_explain() {
        let cell = Cell::parse("let x = ;\nfn f() {}");
        assert!(!cell.has_items());
        assert!(cell.body_file().contains("let x = ;\nfn f() {}"));
    }

    #[test]
    fn multibyte_text_keeps_columns() {
        let cell = Cell::parse("let s = \"é\"; fn f() {}\ns.len()");
        assert_eq!(cell.items_file(&none()), "             fn f() {}\n       ");
    }
}
