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

/// How a statement's output is shaped for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Livy's output as the kernel returns it.
    #[default]
    Livy,
    /// sparkmagic's `%%spark -c sql`: `text/plain` only, one JSON object per row and line (Scala,
    /// Python), or one JSON array of them (`r`).
    Records {
        /// One JSON array instead of lines (SparkR's `jsonlite::toJSON`).
        array: bool,
    },
}

impl Shape {
    /// Reshapes a statement's output data for the client.
    pub fn apply(self, data: crate::Data) -> crate::Data {
        let Self::Records { array } = self else { return data };
        let table = data.get("application/json");
        let names: Vec<&str> = table
            .and_then(|t| t["schema"]["fields"].as_array())
            .map(|fields| fields.iter().filter_map(|f| f["name"].as_str()).collect())
            .unwrap_or_default();
        let rows = table.and_then(|t| t["data"].as_array()).map(Vec::as_slice).unwrap_or_default();
        let records = rows.iter().map(|row| {
            let values = row.as_array().map(Vec::as_slice).unwrap_or_default();
            let record: serde_json::Map<String, serde_json::Value> =
                names.iter().zip(values).map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
            serde_json::Value::Object(record)
        });
        let text = if array {
            serde_json::Value::Array(records.collect()).to_string()
        } else {
            records.map(|r| r.to_string()).collect::<Vec<_>>().join("\n")
        };
        crate::Data::from([("text/plain".to_owned(), serde_json::Value::String(text))])
    }
}

/// The variable sparkmagic's Python and R wrappers loop with.
const SPARKMAGIC_VAR: &str = "yQeKOYBsFgLWWGWZJu3y";

/// Recognises the code sparkmagic sends for `%%spark -c sql` (and `%%sql` in its kernels): the
/// query wrapped in Scala, Python or R that would run it on Spark and print each row as JSON. We
/// answer it as an `sql` statement of the query (at most the rows sparkmagic asks for; its
/// sampling is not applied) whose output is reshaped to what sparkmagic parses.
pub fn sparkmagic_sql(code: &str) -> Option<(String, Shape)> {
    let code = code.trim();
    // Scala: spark.sql("""Q""").toJSON[.sample(false, f)][.take(n)|.collect].foreach(println)
    if let Some(rest) = context(code).and_then(|r| r.strip_prefix("sql(\"\"\"")) {
        let (query, tail) = rest.split_once("\"\"\").toJSON")?;
        let tail = tail.strip_suffix(".foreach(println)")?;
        return Some((limited(query, take(tail, ".take(")?), Shape::Records { array: false }));
    }
    // Python: import sys\nfor V in spark.sql(u"""Q """).toJSON(use_unicode=...)[...]: print(V)
    if let Some(rest) = code.strip_prefix(&format!("import sys\nfor {SPARKMAGIC_VAR} in ")) {
        let rest = context(rest)?.strip_prefix("sql(u\"\"\"")?;
        let (query, tail) = rest.split_once("\"\"\").toJSON(use_unicode=(sys.version_info.major > 2))")?;
        let tail = tail.strip_suffix(&format!(": print({SPARKMAGIC_VAR})"))?;
        return Some((limited(query, take(tail, ".take(")?), Shape::Records { array: false }));
    }
    // R: for (V in (jsonlite:::toJSON(take(sql([ctx, ]"Q"),n)))) {cat(V)}
    let rest = code.strip_prefix(&format!("for ({SPARKMAGIC_VAR} in (jsonlite:::toJSON("))?;
    let rest = rest.strip_suffix(&format!(")))) {{cat({SPARKMAGIC_VAR})}}"))?;
    let (rest, limit) = match rest.strip_prefix("take(") {
        Some(inner) => {
            let (call, n) = inner.rsplit_once(',')?;
            (call, Some(n.trim().parse().ok()?))
        }
        None => (rest.strip_prefix("collect(")?, None),
    };
    let rest = rest.strip_prefix("sample(").map_or(Some(rest), |r| r.rsplit_once(", FALSE,").map(|(call, _)| call))?;
    let rest = rest.strip_prefix("sql(")?;
    let rest = ["spark, ", "sqlContext, "].iter().find_map(|c| rest.strip_prefix(c)).unwrap_or(rest);
    let query = rest.strip_prefix('"')?.strip_suffix("\")")?;
    Some((limited(query, limit), Shape::Records { array: true }))
}

/// The code after `spark.` or `sqlContext.` (the two names sparkmagic finds a SQL context by).
fn context(code: &str) -> Option<&str> {
    ["spark.", "sqlContext."].iter().find_map(|c| code.strip_prefix(c))
}

/// `n` of a trailing `.take(n)`, `None` for `.collect` (all rows); a `.sample(...)` before is
/// skipped. `None` overall when the tail is not one of these.
fn take(tail: &str, prefix: &str) -> Option<Option<u64>> {
    let tail = match tail.strip_prefix(".sample(") {
        Some(rest) => &rest[rest.find(')')? + 1..],
        None => tail,
    };
    if tail.is_empty() || tail == ".collect" || tail == ".collect()" {
        return Some(None);
    }
    let n = tail.strip_prefix(prefix)?.strip_suffix(')')?;
    Some(Some(n.trim().parse().ok()?))
}

/// The query, at most `limit` rows.
fn limited(query: &str, limit: Option<u64>) -> String {
    let query = query.trim().trim_end_matches(';').trim_end();
    match limit {
        Some(n) => format!("SELECT * FROM (\n{query}\n) AS sparkmagic LIMIT {n}"),
        None => query.to_owned(),
    }
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
    fn sparkmagic_sql_wrappers_become_queries() {
        let q = "SELECT 6 * 7 AS answer";
        let scala = format!("spark.sql(\"\"\"{q}\"\"\").toJSON.take(2500).foreach(println)");
        let python = format!(
            "import sys\nfor {SPARKMAGIC_VAR} in spark.sql(u\"\"\"{q} \"\"\").toJSON(use_unicode=(sys.version_info.major > 2)).take(2500): print({SPARKMAGIC_VAR})"
        );
        let r =
            format!("for ({SPARKMAGIC_VAR} in (jsonlite:::toJSON(take(sql(\"{q}\"),2500)))) {{cat({SPARKMAGIC_VAR})}}");
        let limited = format!("SELECT * FROM (\n{q}\n) AS sparkmagic LIMIT 2500");
        assert_eq!(sparkmagic_sql(&scala), Some((limited.clone(), Shape::Records { array: false })));
        assert_eq!(sparkmagic_sql(&python), Some((limited.clone(), Shape::Records { array: false })));
        assert_eq!(sparkmagic_sql(&r), Some((limited, Shape::Records { array: true })));
        let all = format!("sqlContext.sql(\"\"\"{q};\"\"\").toJSON.sample(false, 0.1).collect.foreach(println)");
        assert_eq!(sparkmagic_sql(&all), Some((q.to_owned(), Shape::Records { array: false })));
        for other in ["6 * 7", "spark.sql(\"x\")", "spark.sql(\"\"\"x\"\"\").toJSON.take(many).foreach(println)"] {
            assert_eq!(sparkmagic_sql(other), None, "{other}");
        }
    }

    #[test]
    fn records_are_what_sparkmagic_parses() {
        let table = serde_json::json!({
            "schema": {"type": "struct", "fields": [{"name": "day"}, {"name": "mean"}]},
            "data": [["2008-09-01", 1.5], ["2008-09-02", null]]
        });
        let data = crate::Data::from([
            ("application/json".to_owned(), table),
            ("text/plain".to_owned(), serde_json::json!("a table")),
        ]);
        let lines = Shape::Records { array: false }.apply(data.clone());
        assert_eq!(lines.len(), 1, "text/plain only: sparkmagic prefers application/json when present");
        assert_eq!(
            lines["text/plain"],
            "{\"day\":\"2008-09-01\",\"mean\":1.5}\n{\"day\":\"2008-09-02\",\"mean\":null}"
        );
        let array = Shape::Records { array: true }.apply(data.clone());
        assert_eq!(
            array["text/plain"],
            "[{\"day\":\"2008-09-01\",\"mean\":1.5},{\"day\":\"2008-09-02\",\"mean\":null}]"
        );
        assert_eq!(Shape::Livy.apply(data.clone()), data);
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
