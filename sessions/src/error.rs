//! What the engine refuses, in the caller's terms; the gateway picks the HTTP status.

/// What the engine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No session has this id or name.
    #[error("Session '{0}' not found.")]
    SessionNotFound(String),
    /// No batch has this id.
    #[error("Batch '{0}' not found.")]
    BatchNotFound(String),
    /// The session has no statement with this id.
    #[error("Statement '{statement}' not found in session {session}.")]
    StatementNotFound {
        /// Session id.
        session: u64,
        /// The statement id as given.
        statement: String,
    },
    /// A session or statement kind the gateway does not know.
    #[error("{0}")]
    InvalidKind(String),
    /// Another live session already has this name.
    #[error("Duplicate session name: '{0}'.")]
    DuplicateName(String),
    /// A request field that is well-formed JSON but not acceptable.
    #[error("{0}")]
    InvalidRequest(String),
    /// The session is shutting down and takes no more statements.
    #[error("Session {id} isn't active (state: {state}).")]
    SessionNotActive {
        /// Session id.
        id: u64,
        /// Its Livy state.
        state: String,
    },
    /// The configured session limit is reached.
    #[error("Rejected, too many sessions ({0} is the limit).")]
    TooManySessions(usize),
    /// The gateway cannot take this now (its state could not be recorded); try again.
    #[error("{0}")]
    Unavailable(String),
}
