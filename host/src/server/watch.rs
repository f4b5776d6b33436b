//! Watches the policies folder and the config file, and turns filesystem
//! noise into [`FileChange`]s for the control loop.
//!
//! Both write-then-rename and in-place writes end in a create, modify or
//! rename event for the final path. A rename onto the path or the close of
//! a file opened for writing says the writer is done ([`Noticed::settled`]),
//! and the control loop acts at once; other events are debounced, so a
//! module is compiled once after its writer is done (and a half-written
//! file that slips through is refused, then retried on the next event).
//! The config file is watched through its folder, because editors replace
//! it by renaming a new file over it. Certificate and key files are watched
//! the same way (through their folders, so renewals that rename or
//! re-point a symlink are seen) and reported as a config change: a reload
//! re-checks them and swaps them in, or refuses them and keeps the old ones.

use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A file the control loop should look at again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileChange {
    /// A `*.wasm` file in the policies folder was created, changed or removed.
    Policy(PathBuf),
    /// The config file was written.
    Config,
}

/// A change as the watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noticed {
    pub change: FileChange,
    /// The writer is done with the file: it was renamed into place or
    /// closed after writing. Nothing to wait for.
    pub settled: bool,
}

/// The running watcher; dropping it stops watching.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: Vec<PathBuf>,
}

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Targets {
    policy_dir: PathBuf,
    config_file: PathBuf,
    /// Certificate and key files, each as its canonical folder + file name.
    certificate_files: Vec<PathBuf>,
}

impl FileWatcher {
    /// Starts watching `policy_dir`, `config_file` and `certificate_files`.
    pub fn start(
        policy_dir: &Path,
        config_file: &Path,
        certificate_files: &[PathBuf],
        changes: mpsc::UnboundedSender<Noticed>,
    ) -> notify::Result<FileWatcher> {
        let targets = Targets {
            policy_dir: canonical(policy_dir),
            config_file: canonical(config_file),
            certificate_files: certificate_files
                .iter()
                .map(|f| in_canonical_dir(f))
                .collect(),
        };
        let config_dir = targets
            .config_file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut dirs = vec![targets.policy_dir.clone()];
        let certificate_dirs = targets.certificate_files.iter().filter_map(|f| f.parent());
        for dir in std::iter::once(config_dir.as_path()).chain(certificate_dirs) {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let settled = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => return,
                EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => true,
                _ => false,
            };
            for path in event.paths {
                if let Some(change) = classify(&targets, &path) {
                    let _ = changes.send(Noticed { change, settled });
                }
            }
        })?;
        let mut watcher = FileWatcher {
            watcher,
            watched: Vec::new(),
        };
        for dir in dirs {
            watcher.watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            watcher.watched.push(dir);
        }
        Ok(watcher)
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        for dir in &self.watched {
            let _ = self.watcher.unwatch(dir);
        }
    }
}

fn classify(targets: &Targets, path: &Path) -> Option<FileChange> {
    if path == targets.config_file || targets.certificate_files.iter().any(|f| f == path) {
        return Some(FileChange::Config);
    }
    let in_policy_dir = path.parent() == Some(targets.policy_dir.as_path());
    let is_wasm = path.extension().is_some_and(|e| e == "wasm");
    (in_policy_dir && is_wasm).then(|| FileChange::Policy(path.to_path_buf()))
}

/// `path` with its folder in canonical form (the file itself may be a
/// symlink that a renewal re-points, so it is not resolved).
fn in_canonical_dir(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => canonical(dir).join(name),
        _ => path.to_path_buf(),
    }
}

/// The canonical form of a path (falls back to the path as given).
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
