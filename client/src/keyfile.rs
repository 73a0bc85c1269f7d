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
    /// A directory that would hold keys is not private to this user.
    #[error(
        "{path}: {why}; keys are only written to a directory that is yours and that no one else can write to (a new one is created 0700)"
    )]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
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
/// An existing `dir` must be a directory owned by this user that group and
/// others cannot write to: otherwise someone else could swap the files
/// written there.
pub fn create_private_dir(dir: &Path) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: dir.to_owned(),
        source,
    };
    match fs::metadata(dir) {
        Ok(metadata) => check_private_dir(dir, &metadata),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)
        }
        Err(error) => Err(io(error)),
    }
}

fn check_private_dir(dir: &Path, metadata: &fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_dir = |why: String| KeyFileError::UnsafeDir {
        path: dir.to_owned(),
        why,
    };
    if !metadata.is_dir() {
        return Err(unsafe_dir("not a directory".to_owned()));
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(unsafe_dir(format!(
            "owned by user {}, not by this user ({me})",
            metadata.uid()
        )));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "group or others can write to it (mode {mode:04o}); run `chmod go-w {}`",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_only_into_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b");
        create_private_dir(&new).unwrap();
        let mode = fs::metadata(&new).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a new directory is private");
        create_private_dir(&new).unwrap();

        for open in [0o777, 0o770, 0o722] {
            fs::set_permissions(&new, fs::Permissions::from_mode(open)).unwrap();
            let error = create_private_dir(&new).unwrap_err();
            assert!(
                matches!(error, KeyFileError::UnsafeDir { .. }),
                "{open:o}: {error}"
            );
            assert!(error.to_string().contains("chmod go-w"), "{error}");
        }
        // Readable by others is fine: the keys themselves are 0600.
        fs::set_permissions(&new, fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&new).unwrap();

        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            create_private_dir(&file),
            Err(KeyFileError::UnsafeDir { .. })
        ));
    }

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
