//! Secrets (passwords, keys) held in memory and read from files.
//!
//! A [`Secret`]'s `Debug` and `Display` print `***`, so a secret inside a
//! configuration or an error can be logged without leaking. The only way to
//! its text is [`Secret::expose`], at the one place that hands it to a peer.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// Reads a secret from the first line of a file (trailing `\r\n`
    /// removed). An empty first line is an error: a blank password file is
    /// a mistake, not a password.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Secret, SecretError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::Read {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            return Err(SecretError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Secret(line.to_owned()))
    }

    /// The secret's text, for the one call that sends it to its peer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secret file that could not be used. Names the file, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Its first line is empty.
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Read { path, detail } => {
                write!(
                    f,
                    "cannot read the secret file {}: {detail}",
                    path.display()
                )
            }
            SecretError::Empty { path } => {
                write!(
                    f,
                    "the secret file {} has an empty first line",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for SecretError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_secret_file_gives_its_first_line_and_a_blank_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("link-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good");
        std::fs::write(&good, "s3cret\r\nignored\n").expect("write");
        assert_eq!(Secret::from_file(&good).expect("read").expose(), "s3cret");
        let blank = dir.join("blank");
        std::fs::write(&blank, "\nsecond\n").expect("write");
        assert!(matches!(
            Secret::from_file(&blank),
            Err(SecretError::Empty { .. })
        ));
        let missing = Secret::from_file(dir.join("missing")).expect_err("missing");
        assert!(missing.to_string().contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
