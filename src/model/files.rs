//! Where a model's files come from: a folder on disk (CLI, tests) or files the page handed over
//! (a folder picker, drag and drop, or a hub download). Both are read the same way by the core.

use std::collections::BTreeMap;

use crate::err;
use crate::error::Result;

/// Read access to the files of one model folder, by file name.
pub trait FileSource {
    /// Whether the folder holds `name`.
    fn exists(&self, name: &str) -> bool;
    /// The whole file; a missing file is a [`crate::error::ErrorCode::FileMissing`] error.
    fn read(&self, name: &str) -> Result<Vec<u8>>;
    /// What to call the folder in messages ("model folder ./m", "the selected files").
    fn describe(&self) -> String;

    /// The file as UTF-8 text.
    fn read_text(&self, name: &str) -> Result<String> {
        String::from_utf8(self.read(name)?).map_err(|_| err!(InvalidConfig, "{name} is not UTF-8 text"))
    }

    /// The file's size in bytes. Sources that can tell without reading the file override this.
    fn size(&self, name: &str) -> Result<u64> {
        Ok(self.read(name)?.len() as u64)
    }

    /// `len` bytes of the file from `offset`, for reading a large file piece by piece (a
    /// safetensors header, then one tensor at a time). The default reads the whole file.
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        slice_range(name, &self.read(name)?, offset, len)
    }
}

fn slice_range(name: &str, bytes: &[u8], offset: u64, len: usize) -> Result<Vec<u8>> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| bytes.get(start..start.checked_add(len)?))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| err!(CorruptWeights, "{name} ends before byte {} (truncated?)", offset + len as u64))
}

/// Files held in memory, keyed by name (the page hands these over from the user's disk).
#[derive(Default)]
pub struct MemoryFiles {
    files: BTreeMap<String, Vec<u8>>,
    label: String,
}

impl MemoryFiles {
    pub fn new(label: impl Into<String>) -> Self {
        MemoryFiles { files: BTreeMap::new(), label: label.into() }
    }

    /// Adds a file; a path such as `SmolLM2/config.json` is stored under its base name.
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        self.files.insert(base.to_owned(), bytes);
    }
}

impl FileSource for MemoryFiles {
    fn exists(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.files.get(name).cloned().ok_or_else(|| err!(FileMissing, "{}: {name} is missing", self.describe()))
    }

    fn size(&self, name: &str) -> Result<u64> {
        let bytes = self.files.get(name).ok_or_else(|| err!(FileMissing, "{}: {name} is missing", self.describe()))?;
        Ok(bytes.len() as u64)
    }

    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let bytes = self.files.get(name).ok_or_else(|| err!(FileMissing, "{}: {name} is missing", self.describe()))?;
        slice_range(name, bytes, offset, len)
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::Folder;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::{Path, PathBuf};

    use super::FileSource;
    use crate::err;
    use crate::error::Result;

    /// A model folder on disk.
    pub struct Folder {
        root: PathBuf,
    }

    impl Folder {
        pub fn new(root: impl AsRef<Path>) -> Result<Self> {
            let root = root.as_ref().to_path_buf();
            if !root.is_dir() {
                return Err(err!(FileMissing, "model folder {} does not exist", root.display()));
            }
            Ok(Folder { root })
        }
    }

    impl FileSource for Folder {
        fn exists(&self, name: &str) -> bool {
            self.root.join(name).is_file()
        }

        fn read(&self, name: &str) -> Result<Vec<u8>> {
            let path = self.root.join(name);
            std::fs::read(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => err!(FileMissing, "{} is missing", path.display()),
                _ => err!(Io, "cannot read {}: {e}", path.display()),
            })
        }

        fn size(&self, name: &str) -> Result<u64> {
            let path = self.root.join(name);
            std::fs::metadata(&path).map(|m| m.len()).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => err!(FileMissing, "{} is missing", path.display()),
                _ => err!(Io, "cannot read {}: {e}", path.display()),
            })
        }

        fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let path = self.root.join(name);
            let io = |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::NotFound => err!(FileMissing, "{} is missing", path.display()),
                std::io::ErrorKind::UnexpectedEof => {
                    err!(CorruptWeights, "{} ends before byte {} (truncated?)", path.display(), offset + len as u64)
                }
                _ => err!(Io, "cannot read {}: {e}", path.display()),
            };
            let mut file = std::fs::File::open(&path).map_err(io)?;
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            let mut bytes = vec![0; len];
            file.read_exact(&mut bytes).map_err(io)?;
            Ok(bytes)
        }

        fn describe(&self) -> String {
            format!("model folder {}", self.root.display())
        }
    }
}
