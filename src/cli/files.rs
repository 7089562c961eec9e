//! Writing the CLI's outputs so that a failure never leaves a mixed or half-written folder.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use webtune::{Result, err};

/// A hidden sibling of `path` for this process: `.<name>.<what>-<pid>`.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    path.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Replaces `files` (path, contents) as one: each file is first written in full beside its
/// target; then, one target at a time, the old file is kept as a backup (a hard link, or a copy
/// where the file system has none) and the new one renamed over it. When any step fails, the
/// targets already replaced get their old files back, so a failed write leaves every target as it
/// was (an adapter's weights never pair with another run's config). A crash in the middle can
/// leave `.<name>.old-<pid>` backups beside the targets.
pub fn write_files_atomic(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let failed = |path: &Path, e: std::io::Error| err!(Io, "cannot write {}: {e}", path.display());
    let remove_staged = || files.iter().for_each(|(path, _)| drop(std::fs::remove_file(sibling(path, "tmp"))));
    for (path, bytes) in files {
        if let Err(e) = std::fs::write(sibling(path, "tmp"), bytes) {
            remove_staged();
            return Err(failed(path, e));
        }
    }
    // The targets replaced so far, and whether each had an old file (now its backup).
    let mut replaced: Vec<(&Path, bool)> = Vec::new();
    for (path, _) in files {
        match replace(path) {
            Ok(had_old) => replaced.push((path, had_old)),
            Err(e) => {
                for (done, had_old) in replaced.into_iter().rev() {
                    let _ =
                        if had_old { std::fs::rename(sibling(done, "old"), done) } else { std::fs::remove_file(done) };
                }
                remove_staged();
                return Err(failed(path, e));
            }
        }
    }
    for (path, had_old) in replaced {
        if had_old {
            let _ = std::fs::remove_file(sibling(path, "old"));
        }
    }
    Ok(())
}

/// Backs up `path`'s old file (if any) and renames the staged file over it; `Ok(true)` when there
/// was an old file. On failure `path` is unchanged and no backup is left.
fn replace(path: &Path) -> std::io::Result<bool> {
    let backup = sibling(path, "old");
    let had_old = match std::fs::symlink_metadata(path) {
        Ok(_) => {
            let _ = std::fs::remove_file(&backup);
            std::fs::hard_link(path, &backup).or_else(|_| std::fs::copy(path, &backup).map(drop))?;
            true
        }
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    std::fs::rename(sibling(path, "tmp"), path).inspect_err(|_| {
        let _ = std::fs::remove_file(&backup);
    })?;
    Ok(had_old)
}
