//! The scenario catalogue: every `*.toml` in a directory, validated, with its purpose.

use std::path::{Path, PathBuf};

use crate::scenario::Scenario;

/// One scenario of the catalogue.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub purpose: String,
    pub path: PathBuf,
    /// Part of the quick subset CI runs.
    pub quick: bool,
}

/// The scenarios in `dir`, by file name; every invalid file's mistakes are returned together.
pub fn list(dir: &Path) -> Result<Vec<Entry>, String> {
    let read = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match Scenario::load(&path) {
            Ok(s) => entries.push(Entry {
                name: s.name,
                purpose: s.purpose,
                path,
                quick: s.quick,
            }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors.join("\n"))
    }
}
