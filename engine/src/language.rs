//! Which language a statement runs as, and what a session kind means.

use tilegate_api::{Language, SessionKind};

use crate::Error;

/// Parses a session kind, accepting Livy's aliases. `rust` and `wasm` are accepted too: such a
/// session is reported as `shared` (clients only know Livy's kinds) with that default language.
///
/// # Errors
/// [`Error::InvalidKind`] for anything else.
pub fn parse_session_kind(kind: Option<&str>) -> Result<(SessionKind, Option<Language>), Error> {
    let Some(kind) = kind else { return Ok((SessionKind::Shared, None)) };
    Ok(match kind.trim().to_ascii_lowercase().as_str() {
        "spark" | "scala" => (SessionKind::Spark, None),
        "pyspark" | "python" => (SessionKind::Pyspark, None),
        "sparkr" | "r" => (SessionKind::Sparkr, None),
        "sql" => (SessionKind::Sql, None),
        "shared" => (SessionKind::Shared, None),
        "rust" => (SessionKind::Shared, Some(Language::Rust)),
        "wasm" => (SessionKind::Shared, Some(Language::Wasm)),
        other => {
            return Err(Error::InvalidKind(format!(
                "Invalid kind: '{other}'. Session kinds are Livy's: spark (scala), pyspark (python), sparkr (r), sql, \
                 shared; or rust, wasm"
            )));
        }
    })
}

/// The language statements of a session default to, when they name none: the `tilegate.kind`
/// conf key, else `sql` for sql sessions and `rust` for every other kind.
pub fn session_default(kind: SessionKind, conf_kind: Option<Language>) -> Language {
    conf_kind.unwrap_or(match kind {
        SessionKind::Sql => Language::Sql,
        _ => Language::Rust,
    })
}

/// Resolves a statement's language, in order: its `kind` field (Livy's `spark`/`pyspark`/`sparkr`
/// mean the session default); else a first-line directive `%rust`, `%wasm` or `%sql` (`%%` works
/// too); else the session default. A recognised directive line is removed from the code.
///
/// # Errors
/// [`Error::InvalidKind`] for an unknown `kind` field.
pub fn resolve(kind: Option<&str>, code: &str, session_default: Language) -> Result<(Language, String), Error> {
    let (directive, body) = split_directive(code);
    let language = match kind.map(|k| k.trim().to_ascii_lowercase()) {
        Some(k) => match k.as_str() {
            "rust" => Language::Rust,
            "wasm" => Language::Wasm,
            "sql" => Language::Sql,
            "spark" | "scala" | "pyspark" | "python" | "sparkr" | "r" => directive.unwrap_or(session_default),
            other => {
                return Err(Error::InvalidKind(format!(
                    "Invalid statement kind: '{other}'. Use rust, wasm or sql (or spark, pyspark, sparkr for the \
                     session's default)"
                )));
            }
        },
        None => directive.unwrap_or(session_default),
    };
    Ok((language, body.to_owned()))
}

/// Splits a leading `%lang` line off the code.
fn split_directive(code: &str) -> (Option<Language>, &str) {
    let trimmed = code.trim_start();
    let (first, rest) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
    let word = first.trim().trim_start_matches('%');
    if first.trim_start().starts_with('%')
        && let Ok(language) = word.parse::<Language>()
    {
        return (Some(language), rest);
    }
    (None, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_kind_field_wins() {
        let (lang, code) = resolve(Some("wasm"), "%sql\n(module)", Language::Rust).unwrap();
        assert_eq!(lang, Language::Wasm);
        assert_eq!(code, "(module)");
    }

    #[test]
    fn directive_then_session_default() {
        assert_eq!(resolve(None, "%%sql\nSELECT 1", Language::Rust).unwrap(), (Language::Sql, "SELECT 1".into()));
        assert_eq!(resolve(Some("pyspark"), "%wasm\n(module)", Language::Rust).unwrap().0, Language::Wasm);
        assert_eq!(resolve(None, "6 * 7", Language::Rust).unwrap(), (Language::Rust, "6 * 7".into()));
        assert_eq!(resolve(Some("spark"), "1", Language::Sql).unwrap().0, Language::Sql);
    }

    #[test]
    fn a_percent_line_that_is_not_a_language_stays() {
        assert_eq!(resolve(None, "%pylab\nx", Language::Rust).unwrap(), (Language::Rust, "%pylab\nx".into()));
    }

    #[test]
    fn unknown_kinds_are_refused() {
        assert!(matches!(resolve(Some("cobol"), "", Language::Rust), Err(Error::InvalidKind(_))));
        assert!(matches!(parse_session_kind(Some("pyspark3")), Err(Error::InvalidKind(_))));
        assert_eq!(parse_session_kind(Some("python")).unwrap(), (SessionKind::Pyspark, None));
        assert_eq!(parse_session_kind(Some("rust")).unwrap(), (SessionKind::Shared, Some(Language::Rust)));
        assert_eq!(session_default(SessionKind::Sql, None), Language::Sql);
        assert_eq!(session_default(SessionKind::Spark, Some(Language::Wasm)), Language::Wasm);
    }
}
