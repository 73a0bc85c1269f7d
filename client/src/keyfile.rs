//! Files that hold secrets: private keys are written 0600 and refused when
//! group or others can read them; everything is written atomically.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate and other public files.
pub const PUBLIC_MODE: u32 = 0o644;

/// A key or certificate file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A private key file is readable or writable by group or others.
    #[error(
        "{path}: private key is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file would be overwritten.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
}

/// Reads a private key file, refusing one that others could read.
pub fn read_private(path: &Path) -> Result<String, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(io)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io)
}

/// Reads a public file (a certificate).
pub fn read_public(path: &Path) -> Result<String, KeyFileError> {
    fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Creates `path` with `mode`; fails if it exists.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.to_owned())
        } else {
            KeyFileError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Replaces `path` atomically: writes a temporary file with `mode` beside
/// it, then renames it over `path`. Readers see the old or the new file,
/// never a partial one.
pub fn write_replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let result = write_new(&temp, contents, mode).and_then(|()| {
        fs::rename(&temp, path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Creates `dir` (and parents) if missing, with mode 0700 for the last one.
pub fn create_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: dir.to_owned(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        write_new(&key, b"secret", KEY_MODE).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_private(&key).unwrap(), "secret");
        assert!(matches!(
            write_new(&key, b"x", KEY_MODE),
            Err(KeyFileError::Exists(_))
        ));

        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let error = read_private(&key).unwrap_err();
        assert!(matches!(error, KeyFileError::TooOpen { mode: 0o640, .. }));
        assert!(error.to_string().contains("k.key"));

        write_replace(&key, b"new", KEY_MODE).unwrap();
        assert_eq!(read_private(&key).unwrap(), "new");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
