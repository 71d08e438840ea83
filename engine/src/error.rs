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
