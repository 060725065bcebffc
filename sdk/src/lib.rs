//! Rust client for the tilegate gateway; it speaks the Livy REST API, so it works with Livy too for
//! what both share.
//!
//! ```no_run
//! use tilegate_sdk::{Client, CreateSession, Language};
//!
//! # async fn demo() -> Result<(), tilegate_sdk::Error> {
//! let client = Client::new("http://127.0.0.1:8998")?;
//! let session = client.create_session(&CreateSession::default()).await?;
//! let answer: i64 = client
//!     .run_as(session.id, Language::Wasm, r#"(module (func (export "main") (result i32) i32.const 42))"#)
//!     .await?;
//! assert_eq!(answer, 42);
//! client.delete_session(session.id).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`Client`]: one method per route, plus [`Client::run`] (submit and wait), [`Client::run_as`]
//!   (typed result), [`Client::sql`] (typed rows, complete even past the output's row cap),
//!   [`Client::run_with_progress`], [`Client::download`] and [`Client::wait`].
//! - [`Error`]: transport failures, API refusals (status + message), failed statements.
//! - The wire types are re-exported from `tilegate-api`.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use tilegate_api::*;

/// What went wrong talking to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be sent or the response read.
    #[error("HTTP error: {0}")]
    Http(#[from] reqwest::Error),
    /// The gateway refused the request.
    #[error("{status}: {msg}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The gateway's `msg`.
        msg: String,
    },
    /// The statement ran and failed.
    #[error("{ename}: {evalue}")]
    Statement {
        /// Kind of failure, e.g. `Timeout`.
        ename: String,
        /// Message.
        evalue: String,
        /// Details.
        traceback: Vec<String>,
    },
    /// The statement was cancelled before it produced output.
    #[error("statement was cancelled")]
    Cancelled,
    /// The result did not have the expected type.
    #[error("unexpected result: {0}")]
    Decode(String),
}

/// A gateway client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the gateway at `base_url`, e.g. `http://127.0.0.1:8998`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # fn demo() -> Result<(), Error> {
    /// let client = Client::new("http://127.0.0.1:8998")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] when the HTTP client cannot be built.
    pub fn new(base_url: &str) -> Result<Self, Error> {
        Self::with_authorization(base_url, None)
    }

    /// A client that sends `token` as a bearer token (a gateway with `[[users]]` needs one).
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # fn demo() -> Result<(), Error> {
    /// let client = Client::with_token("https://tilegate.example.org", &std::env::var("TILEGATE_TOKEN").unwrap_or_default())?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] when the HTTP client cannot be built or the token is not header text.
    pub fn with_token(base_url: &str, token: &str) -> Result<Self, Error> {
        Self::with_authorization(base_url, Some(format!("Bearer {token}")))
    }

    /// A client that signs in with HTTP Basic credentials.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # fn demo() -> Result<(), Error> {
    /// let client = Client::with_basic("https://tilegate.example.org", "ann", "her password")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] when the HTTP client cannot be built or the credentials are not header text.
    pub fn with_basic(base_url: &str, user: &str, password: &str) -> Result<Self, Error> {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self::with_authorization(base_url, Some(format!("Basic {encoded}")))
    }

    fn with_authorization(base_url: &str, authorization: Option<String>) -> Result<Self, Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = authorization {
            let mut value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| Error::Decode("credentials must be printable ASCII".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder().default_headers(headers).build()?;
        Ok(Self { http, base: base_url.trim_end_matches('/').to_owned() })
    }

    /// The gateway's base URL.
    ///
    /// ```
    /// let client = tilegate_sdk::Client::new("http://127.0.0.1:8998/").unwrap();
    /// assert_eq!(client.base_url(), "http://127.0.0.1:8998");
    /// ```
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /version`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let version = client.version().await?;
    /// println!("Livy API {}, tilegate {}", version.version, version.tilegate_version);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn version(&self) -> Result<Version, Error> {
        self.call(Method::GET, "/version", None::<&()>).await
    }

    /// `POST /sessions`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let session = client
    ///     .create_session(&CreateSession { kind: Some("sql".into()), name: Some("sst".into()), ..Default::default() })
    ///     .await?;
    /// assert_eq!(session.default_language, Language::Sql);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`] (e.g. an invalid kind or a duplicate name).
    pub async fn create_session(&self, request: &CreateSession) -> Result<Session, Error> {
        self.call(Method::POST, "/sessions", Some(request)).await
    }

    /// `GET /sessions?from&size`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// for session in client.list_sessions(0, 100).await?.sessions {
    ///     println!("{} {:?} {}", session.id, session.name, session.state);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn list_sessions(&self, from: u64, size: u64) -> Result<SessionList, Error> {
        self.call(Method::GET, &format!("/sessions?from={from}&size={size}"), None::<&()>).await
    }

    /// `GET /sessions/{id}`; `session` is an id or a name.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let session = client.session("sst").await?; // by id or by name
    /// println!("{}: {}", session.id, session.state);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`] (404 for an unknown session).
    pub async fn session(&self, session: impl std::fmt::Display) -> Result<Session, Error> {
        self.call(Method::GET, &format!("/sessions/{session}"), None::<&()>).await
    }

    /// `GET /sessions/{id}/state`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let state = client.session_state(0).await?;
    /// println!("{}", state.state);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn session_state(&self, session: impl std::fmt::Display) -> Result<SessionStateInfo, Error> {
        self.call(Method::GET, &format!("/sessions/{session}/state"), None::<&()>).await
    }

    /// `GET /sessions/{id}/log?from&size` (`from` defaults to the last `size` lines).
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let log = client.session_log(0, None, Some(20)).await?; // the last 20 lines
    /// log.log.iter().for_each(|line| println!("{line}"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn session_log(
        &self,
        session: impl std::fmt::Display,
        from: Option<u64>,
        size: Option<i64>,
    ) -> Result<SessionLog, Error> {
        let mut path = format!("/sessions/{session}/log?size={}", size.unwrap_or(100));
        if let Some(from) = from {
            path.push_str(&format!("&from={from}"));
        }
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `DELETE /sessions/{id}`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// client.delete_session(0).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn delete_session(&self, session: impl std::fmt::Display) -> Result<(), Error> {
        self.call::<Msg>(Method::DELETE, &format!("/sessions/{session}"), None::<&()>).await.map(drop)
    }

    /// `POST /sessions/{id}/statements`: queues a statement and returns it (normally `waiting`).
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let statement = client.submit(0, Some(Language::Rust), "6 * 7").await?;
    /// let done = client.wait(0, statement.id).await?;
    /// println!("{:?}", done.output);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn submit(
        &self,
        session: impl std::fmt::Display,
        language: Option<Language>,
        code: &str,
    ) -> Result<Statement, Error> {
        let body = CreateStatement { code: code.to_owned(), kind: language.map(|l| l.as_str().to_owned()) };
        self.call(Method::POST, &format!("/sessions/{session}/statements"), Some(&body)).await
    }

    /// `GET /sessions/{id}/statements/{sid}`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let statement = client.statement(0, 3).await?;
    /// println!("{:?} {:.0}%", statement.state, statement.progress * 100.0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn statement(&self, session: impl std::fmt::Display, statement: u64) -> Result<Statement, Error> {
        self.call(Method::GET, &format!("/sessions/{session}/statements/{statement}"), None::<&()>).await
    }

    /// `GET /sessions/{id}/statements`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let list = client.statements(0).await?;
    /// println!("{} statements", list.total_statements);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn statements(&self, session: impl std::fmt::Display) -> Result<StatementList, Error> {
        self.call(Method::GET, &format!("/sessions/{session}/statements"), None::<&()>).await
    }

    /// `POST /sessions/{id}/statements/{sid}/cancel`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let statement = client.submit(0, Some(Language::Rust), "loop {}").await?;
    /// client.cancel(0, statement.id).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn cancel(&self, session: impl std::fmt::Display, statement: u64) -> Result<(), Error> {
        let path = format!("/sessions/{session}/statements/{statement}/cancel");
        self.call::<Msg>(Method::POST, &path, None::<&()>).await.map(drop)
    }

    /// `GET /sessions/{id}/statements/{statement}?wait=`: the statement once it is final or after
    /// `wait` (at most 60 s), whichever comes first. A long poll: the gateway answers the moment
    /// the statement finishes.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # use std::time::Duration;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let current = client.statement_when_final(0, 1, Duration::from_secs(10)).await?;
    /// println!("{:?} at {:.0}%", current.state, current.progress * 100.0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn statement_when_final(
        &self,
        session: impl std::fmt::Display,
        statement: u64,
        wait: Duration,
    ) -> Result<Statement, Error> {
        let path = format!("/sessions/{session}/statements/{statement}?wait={}", wait.as_secs_f64().min(60.0));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Waits for a statement to be final (`available` or `cancelled`) with long polls
    /// ([`Client::statement_when_final`]), so it returns as soon as the statement finishes. A
    /// server that answers at once (one without long polls, such as Apache Livy) is polled with a
    /// pause growing from 0.5 ms to 100 ms instead.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let statement = client.submit(0, None, "6 * 7").await?;
    /// let done = client.wait(0, statement.id).await?;
    /// assert!(done.state.is_final());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn wait(&self, session: impl std::fmt::Display, statement: u64) -> Result<Statement, Error> {
        self.poll(&session.to_string(), statement, Duration::from_secs(30), |_| {}).await
    }

    /// Long-polls a statement (`wait` per request) until it is final, telling `on_answer` each
    /// answer; polls with a growing pause if the server answers without waiting.
    async fn poll(
        &self,
        session: &str,
        statement: u64,
        wait: Duration,
        mut on_answer: impl FnMut(&Statement),
    ) -> Result<Statement, Error> {
        let mut pause = Duration::from_micros(500);
        loop {
            let asked = tokio::time::Instant::now();
            let current = self.statement_when_final(session, statement, wait).await?;
            on_answer(&current);
            if current.state.is_final() {
                return Ok(current);
            }
            if asked.elapsed() < wait / 2 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }

    /// `POST /batches`: runs a snippet once, outside any session, as Airflow's Livy provider does.
    /// Give `file` (a name in the gateway's jobs directory) or inline `code` and `kind`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let batch = client
    ///     .submit_batch(&CreateBatch { file: Some("time_series.rs".into()), ..Default::default() })
    ///     .await?;
    /// let done = client.wait_batch(batch.id).await?;
    /// println!("{}: {:?}", done.state, client.batch_log(batch.id).await?.last());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`] (e.g. both or neither of `file` and `code`, no such file).
    pub async fn submit_batch(&self, request: &CreateBatch) -> Result<Batch, Error> {
        self.call(Method::POST, "/batches", Some(request)).await
    }

    /// `GET /batches/{id}`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let batch = client.batch(0).await?;
    /// println!("{}", batch.state);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`] (404 for an unknown batch).
    pub async fn batch(&self, batch: u64) -> Result<Batch, Error> {
        self.call(Method::GET, &format!("/batches/{batch}"), None::<&()>).await
    }

    /// `GET /batches/{id}/log`: every line of a batch's log (the run, then the result's text or
    /// the error).
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// for line in client.batch_log(0).await? {
    ///     println!("{line}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn batch_log(&self, batch: u64) -> Result<Vec<String>, Error> {
        let log: SessionLog = self.call(Method::GET, &format!("/batches/{batch}/log?size=-1"), None::<&()>).await?;
        Ok(log.log)
    }

    /// `DELETE /batches/{id}`: kills the batch if it runs, and forgets it.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// client.delete_batch(0).await?; // kills it if it still runs
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn delete_batch(&self, batch: u64) -> Result<(), Error> {
        self.call::<Msg>(Method::DELETE, &format!("/batches/{batch}"), None::<&()>).await.map(drop)
    }

    /// Polls a batch until it ends (`success`, `dead` or `killed`), backing off from 1 ms to 1 s.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let batch = client.submit_batch(&CreateBatch { code: Some("6 * 7".into()), ..Default::default() }).await?;
    /// assert_eq!(client.wait_batch(batch.id).await?.state, SessionState::Success);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Http`] or [`Error::Api`].
    pub async fn wait_batch(&self, batch: u64) -> Result<Batch, Error> {
        let mut pause = Duration::from_millis(1);
        loop {
            let current = self.batch(batch).await?;
            if matches!(current.state, SessionState::Success | SessionState::Dead | SessionState::Killed) {
                return Ok(current);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Submits a statement, waits for it, and returns its output.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let output = client.run(0, Language::Rust, "6 * 7").await?;
    /// assert_eq!(output.text(), Some("42"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Statement`] when it failed, [`Error::Cancelled`] when it was cancelled, or a transport/API error.
    pub async fn run(&self, session: impl std::fmt::Display, language: Language, code: &str) -> Result<Output, Error> {
        let session = session.to_string();
        let submitted = self.submit(&session, Some(language), code).await?;
        let done = self.wait(&session, submitted.id).await?;
        match done.output {
            None => Err(Error::Cancelled),
            Some(Output::Error { ename, evalue, traceback, .. }) => Err(Error::Statement { ename, evalue, traceback }),
            Some(ok) => Ok(ok),
        }
    }

    /// Like [`Client::run`], deserializing the `application/json` result into `T`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let rows: Vec<(i64, f64)> = client.run_as(0, Language::Rust, "vec![(1, 0.5), (2, 1.5)]").await?;
    /// assert_eq!(rows.len(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Client::run`], plus [`Error::Decode`] when the result does not fit `T`.
    pub async fn run_as<T: DeserializeOwned>(
        &self,
        session: impl std::fmt::Display,
        language: Language,
        code: &str,
    ) -> Result<T, Error> {
        let output = self.run(session, language, code).await?;
        let json = output.json().cloned().unwrap_or(serde_json::Value::Null);
        serde_json::from_value(json).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Runs one SQL query and returns its rows as `T` (a struct whose fields are column names, or
    /// a map). When the statement's output was capped (`sql_max_rows`), every row is fetched from
    /// the result endpoint instead, so the rows are always complete.
    ///
    /// ```no_run
    /// # async fn demo(client: tilegate_sdk::Client, session: u64) -> Result<(), tilegate_sdk::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Day { time: String, cells: u64 }
    /// let days: Vec<Day> = client.sql(session, "SELECT time, COUNT(*) AS cells FROM sst GROUP BY time").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Client::run`], plus [`Error::Decode`] when a row does not fit `T`.
    pub async fn sql<T: DeserializeOwned>(
        &self,
        session: impl std::fmt::Display,
        query: &str,
    ) -> Result<Vec<T>, Error> {
        let session = session.to_string();
        let submitted = self.submit(&session, Some(Language::Sql), query).await?;
        let done = self.wait(&session, submitted.id).await?;
        let output = match done.output {
            None => return Err(Error::Cancelled),
            Some(Output::Error { ename, evalue, traceback, .. }) => {
                return Err(Error::Statement { ename, evalue, traceback });
            }
            Some(ok) => ok,
        };
        let decode = |v: serde_json::Value| serde_json::from_value::<T>(v).map_err(|e| Error::Decode(e.to_string()));
        let answer = output.json().cloned().unwrap_or_default();
        if answer["truncated"] == serde_json::Value::Bool(true) {
            let bytes = self.download(&session, submitted.id, "jsonl").await?;
            return String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).map_err(|e| Error::Decode(e.to_string())))
                .map(|row| row.and_then(decode))
                .collect();
        }
        let names: Vec<String> = answer["schema"]["fields"]
            .as_array()
            .map(|fields| fields.iter().map(|f| f["name"].as_str().unwrap_or_default().to_owned()).collect())
            .ok_or_else(|| Error::Decode("the output is not Livy's sql shape".into()))?;
        let rows = answer["data"].as_array().cloned().unwrap_or_default();
        rows.into_iter()
            .map(|row| {
                let values = row.as_array().cloned().unwrap_or_default();
                decode(serde_json::Value::Object(names.iter().cloned().zip(values).collect()))
            })
            .collect()
    }

    /// Submits a statement and waits for it like [`Client::run`], calling `on_progress` with each
    /// new `progress` (0 to 1) seen while it runs.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let output = client
    ///     .run_with_progress(0, Language::Rust, "dataset(\"sst\").map(|t| t.stats_by_time()).reduce_by_key(Stats::merge)", |p| eprintln!("{:.0}%", p * 100.0))
    ///     .await?;
    /// println!("{:?}", output.json());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Client::run`].
    pub async fn run_with_progress(
        &self,
        session: impl std::fmt::Display,
        language: Language,
        code: &str,
        mut on_progress: impl FnMut(f64),
    ) -> Result<Output, Error> {
        let session = session.to_string();
        let submitted = self.submit(&session, Some(language), code).await?;
        let mut last = -1.0;
        // Long polls of 200 ms: the answer comes when the statement finishes, progress in between.
        let done = self
            .poll(&session, submitted.id, Duration::from_millis(200), |current| {
                if current.progress != last {
                    last = current.progress;
                    on_progress(last);
                }
            })
            .await?;
        match done.output {
            None => Err(Error::Cancelled),
            Some(Output::Error { ename, evalue, traceback, .. }) => Err(Error::Statement { ename, evalue, traceback }),
            Some(ok) => Ok(ok),
        }
    }

    /// The whole result of an `sql` statement as `format` bytes: `jsonl`, `csv`, `arrow` or `parquet`.
    ///
    /// ```no_run
    /// # use tilegate_sdk::*;
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let statement = client.submit(0, Some(Language::Sql), "SELECT * FROM sst LIMIT 100000").await?;
    /// client.wait(0, statement.id).await?;
    /// let csv = client.download(0, statement.id, "csv").await?;
    /// std::fs::write("cells.csv", csv).ok();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Api`] (404) when the statement has no kept result, or a transport error.
    pub async fn download(
        &self,
        session: impl std::fmt::Display,
        statement: u64,
        format: &str,
    ) -> Result<Vec<u8>, Error> {
        let url = format!("{}/sessions/{session}/statements/{statement}/result", self.base);
        let response = self.http.get(url).query(&[("format", format)]).send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<Msg>(&bytes)
                .map_or_else(|_| String::from_utf8_lossy(&bytes).into_owned(), |m| m.msg);
            return Err(Error::Api { status, msg });
        }
        Ok(bytes.to_vec())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        parse(response).await
    }
}

async fn parse<T: DeserializeOwned>(response: Response) -> Result<T, Error> {
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<Msg>(&bytes)
            .map(|m| m.msg)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(Error::Api { status, msg });
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{e} in {}", String::from_utf8_lossy(&bytes))))
}
