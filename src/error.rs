//! One error type for the whole core. Every error carries a stable [`ErrorCode`] (the JS API
//! exposes it as `error.code`) and a message that names the file, line or tensor involved and,
//! where there is one, what the user can do about it.

use std::fmt;

/// Stable machine-readable error categories. The string forms are part of the public JS API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A file the operation needs is absent.
    FileMissing,
    /// A file exists but could not be read.
    Io,
    /// `config.json` (or another JSON config) is malformed or inconsistent.
    InvalidConfig,
    /// The model's architecture is not one webtune implements.
    UnsupportedArchitecture,
    /// A safetensors file is truncated, corrupt or holds an unusable dtype.
    CorruptWeights,
    /// A tensor the architecture needs is absent from the weights.
    MissingTensor,
    /// A tensor has a different shape than the config implies.
    ShapeMismatch,
    /// The tokenizer files are malformed or do not fit the model.
    InvalidTokenizer,
    /// A dataset row or file could not be used.
    InvalidDataset,
    /// An adapter file or adapter configuration could not be used.
    InvalidAdapter,
    /// Training options that do not fit together or do not fit the model.
    InvalidOptions,
    /// The GPU could not be used (no adapter, device lost, out of memory).
    Gpu,
}

impl ErrorCode {
    /// The stable string form used by the JS API (`error.code`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FileMissing => "FILE_MISSING",
            ErrorCode::Io => "IO",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::UnsupportedArchitecture => "UNSUPPORTED_ARCHITECTURE",
            ErrorCode::CorruptWeights => "CORRUPT_WEIGHTS",
            ErrorCode::MissingTensor => "MISSING_TENSOR",
            ErrorCode::ShapeMismatch => "SHAPE_MISMATCH",
            ErrorCode::InvalidTokenizer => "INVALID_TOKENIZER",
            ErrorCode::InvalidDataset => "INVALID_DATASET",
            ErrorCode::InvalidAdapter => "INVALID_ADAPTER",
            ErrorCode::InvalidOptions => "INVALID_OPTIONS",
            ErrorCode::Gpu => "GPU",
        }
    }
}

/// A webtune error: a stable code plus a message written for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for building an error: `err!(Code, "format {}", args)`.
#[macro_export]
macro_rules! err {
    ($code:ident, $($arg:tt)+) => {
        $crate::error::Error::new($crate::error::ErrorCode::$code, format!($($arg)+))
    };
}
