//! The one error type of Hotline's rules. The HTTP edge maps each variant to a
//! Matrix `errcode` and status in one place (`hotline_api::error`).

use serde_json::Value as JsonValue;

/// Result of a service call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request cannot be served. Messages are shown to clients: they never
/// carry secrets, tokens or message bodies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Missing access token")]
    MissingToken,
    #[error("Unknown access token")]
    UnknownToken,
    #[error("Request body is not JSON")]
    NotJson,
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    InvalidUsername(String),
    #[error("User ID already taken")]
    UserInUse,
    #[error("Room alias already taken")]
    RoomInUse,
    #[error("{0}")]
    TooLarge(String),
    #[error("Too many requests")]
    LimitExceeded { retry_after_ms: u64 },
    /// An urgent contact past its line's quota (`429 M_LIMIT_EXCEEDED`):
    /// why, and when the quota gives one back.
    #[error("{message}")]
    UrgentQuota {
        message: String,
        retry_after_ms: u64,
        resets_ts: i64,
    },
    /// The client stopped sending the request body (`408`; the connection
    /// is closed, since the rest of the body is never read).
    #[error("Timed out reading the request body")]
    RequestTimeout,
    #[error("Unrecognized request")]
    Unrecognized,
    #[error("{0}")]
    UnsupportedRoomVersion(String),
    /// A joining server does not support the room's version.
    #[error("The room's version {0} is not one your server supports")]
    IncompatibleRoomVersion(ruma::RoomVersionId),
    #[error("{0}")]
    BadState(String),
    #[error("Registration is disabled")]
    RegistrationDisabled,
    #[error("{0}")]
    MissingParam(String),
    /// User-interactive authentication is needed (or failed): the body is
    /// the spec's flows object, with `errcode` when a stage failed.
    #[error("User-interactive authentication required")]
    Uiaa(JsonValue),
    /// A key backup write named a version that is not the current one.
    #[error("Wrong backup version")]
    WrongRoomKeysVersion { current_version: Option<String> },
    /// The data is the server's to keep (`m.push_rules` account data): clients
    /// change it through its own API.
    #[error("{0}")]
    ServerControlled(String),
    /// The media is not an image the server can thumbnail (the spec's `400`
    /// with `M_UNKNOWN`): an encrypted attachment, a PDF, a corrupt file.
    #[error("Cannot generate a thumbnail of this content")]
    CannotThumbnail,
    /// A sliding sync `pos` the server does not hold (too old, or from
    /// before a restart): the client starts its connection again.
    #[error("Unknown position")]
    UnknownPos,
    /// The server's storage is out of space: nothing of the request was
    /// kept, and the same request may succeed once space returns.
    #[error("The server's storage is full; try again later")]
    StorageFull,
    /// A federation request without a valid signature (`401
    /// M_UNAUTHORIZED`).
    #[error("{0}")]
    Unauthorized(String),
    /// Another server could not be reached, or answered with nothing
    /// usable (`502`).
    #[error("{0}")]
    Unavailable(String),
    /// Another server's media is larger than this server takes (the
    /// spec's `502` with `M_TOO_LARGE`).
    #[error("{0}")]
    RemoteTooLarge(String),
    /// Something broke inside. Logged in full; clients see a generic message.
    #[error("Internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    pub fn bad_json(msg: impl Into<String>) -> Self {
        Error::BadJson(msg.into())
    }
    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Error::InvalidParam(msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }
}

impl From<hotline_store::StoreError> for Error {
    fn from(e: hotline_store::StoreError) -> Self {
        match e {
            // Logged once per episode by the store, not per request.
            hotline_store::StoreError::Full(_) => Error::StorageFull,
            hotline_store::StoreError::Invalid(_) => {
                Error::InvalidParam("text with a NUL character cannot be stored".into())
            }
            e => Error::Internal(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::BadJson(e.to_string())
    }
}
