//! The one error type of the engine crate.

/// What can go wrong talking to the engine. Messages never contain the URL's password (only
/// [`crate::EngineUrl`]'s redacted `Display` is ever formatted into them).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The `--backend` URL is malformed.
    #[error("engine URL: {message}")]
    BadUrl { message: String },

    /// The engine could not be reached, or the pool had no connection within its timeout.
    #[error("engine {url}: cannot connect: {message}")]
    Connect { url: String, message: String },

    /// A statement failed (`what` says which operation).
    #[error("engine: {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: mysql::Error,
    },

    /// The database was written by a newer Vitrine.
    #[error("engine database {database}: schema version {found} is newer than this build knows ({known}): upgrade Vitrine")]
    SchemaTooNew { database: String, found: u32, known: u32 },

    /// A vector of the wrong length, or the model's dimension differs from the stored vectors'.
    #[error("engine: dimension mismatch: {message}")]
    Dimension { message: String },

    /// No model was recorded yet, but vectors were written or queried.
    #[error("engine: no model recorded: call set_model first")]
    NoModel,

    /// A row the engine returned does not decode.
    #[error("engine: corrupt row: {message}")]
    Corrupt { message: String },

    /// A write while a reindex holds the database's fence (`vitrine reindex`, [`crate::Reindex`]).
    #[error(
        "engine: a reindex of this database is running (started {started_s_ago} s ago): writes are refused until it \
         switches over to the new model; retry after it"
    )]
    Reindexing { started_s_ago: u64 },

    /// A write through a handle on a vector space that is no longer the live one.
    #[error(
        "engine: this database was reindexed with another model (live vector space {live}; this node writes space \
         {mine}): restart this node with the new model (`--model`)"
    )]
    Reindexed { live: u32, mine: u32 },

    /// A reindex whose fence went stale (no heartbeat for longer than the lease) or was taken.
    #[error("engine: this reindex lost its fence (no heartbeat within the lease), so writes may have happened meanwhile: run it again")]
    ReindexLost,

    /// A caller's input outside the bounds (keyword text too long, a non-finite vector, filters).
    #[error("engine: invalid input: {message}")]
    Invalid { message: String },
}

impl EngineError {
    pub(crate) fn sql(what: &'static str) -> impl FnOnce(mysql::Error) -> EngineError {
        move |source| EngineError::Sql { what, source }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> EngineError {
        EngineError::Invalid { message: message.into() }
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> EngineError {
        EngineError::Corrupt { message: message.into() }
    }

    /// True when the write was refused because of a reindex (running, or done with another model).
    pub fn is_reindex(&self) -> bool {
        matches!(self, EngineError::Reindexing { .. } | EngineError::Reindexed { .. } | EngineError::ReindexLost)
    }

    /// True when the caller sent something wrong (bad URL, text, filter, vector length).
    pub fn is_user_error(&self) -> bool {
        matches!(self, EngineError::BadUrl { .. } | EngineError::Invalid { .. })
    }
}

impl From<EngineError> for vitrine_core::CoreError {
    fn from(e: EngineError) -> Self {
        vitrine_core::CoreError::Store { message: e.to_string() }
    }
}
