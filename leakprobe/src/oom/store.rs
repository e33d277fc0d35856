//! OOM reports on disk: one JSON file per report in one directory, written atomically, bounded in count and
//! bytes with the oldest removed first, reloaded at start.
//!
//! A report is written to a hidden temporary file, flushed to disk, renamed to `oom-<id>.json`, and the
//! directory is flushed: a crash leaves either the whole file or no file (a leftover temporary file is
//! removed at the next start). At start, a file that does not parse, or that is not a report, is skipped with
//! a warning and counted, never fatal. Reports that could not be written stay in memory (and are counted).

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::protocol::oom::{OomReport, OomSummary, make_id, valid_id};

/// `format` of every report file.
pub const FILE_FORMAT: &str = "leakprobe-oom-report";
/// `version` of the report files this build writes and reads.
pub const FILE_VERSION: u32 = 1;
/// Reports kept at most, by default.
pub const DEFAULT_MAX_REPORTS: usize = 100;
/// Bytes of report files kept at most, by default.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Bounds of the store; the oldest reports go first when one is exceeded (the newest is always kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_reports: usize,
    pub max_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self { max_reports: DEFAULT_MAX_REPORTS, max_bytes: DEFAULT_MAX_BYTES }
    }
}

/// What the store did, for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Reports read back at start.
    pub loaded: u64,
    /// Files skipped at start: unparsable, truncated, of another format or version, or not report files.
    pub skipped: u64,
    /// Reports written.
    pub written: u64,
    /// Reports that could not be written (kept in memory only).
    pub write_errors: u64,
    /// Reports removed to stay within the limits.
    pub rotated: u64,
}

/// A report file: the report with what identifies the format.
#[derive(Serialize, Deserialize)]
struct FileBody<R> {
    format: String,
    version: u32,
    report: R,
}

#[derive(Debug)]
struct Entry {
    report: OomReport,
    bytes: u64,
    on_disk: bool,
}

/// The reports, in memory and in their directory.
#[derive(Debug)]
pub struct ReportStore {
    dir: PathBuf,
    limits: StoreLimits,
    /// By id, so oldest first.
    reports: BTreeMap<String, Entry>,
    bytes: u64,
    counters: StoreCounters,
}

/// Name of the file of report `id`.
pub fn file_name(id: &str) -> String {
    format!("oom-{id}.json")
}

impl ReportStore {
    /// Loads every report in `dir` (created if missing). Returns the store and one warning per problem: the
    /// store works in memory even when the directory is unusable.
    pub fn load(dir: &Path, limits: StoreLimits) -> (Self, Vec<String>) {
        let mut store = Self {
            dir: dir.to_path_buf(),
            limits,
            reports: BTreeMap::new(),
            bytes: 0,
            counters: StoreCounters::default(),
        };
        let mut warnings = Vec::new();
        if let Err(err) = fs::create_dir_all(dir) {
            warnings.push(format!("cannot create the OOM report directory {}: {err}", dir.display()));
            return (store, warnings);
        }
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                warnings.push(format!("cannot read the OOM report directory {}: {err}", dir.display()));
                return (store, warnings);
            }
        };
        for entry in entries {
            match entry {
                Ok(entry) => store.load_file(&entry.path(), &mut warnings),
                Err(err) => warnings.push(format!("reading {}: {err}", dir.display())),
            }
        }
        store.rotate();
        (store, warnings)
    }

    fn load_file(&mut self, path: &Path, warnings: &mut Vec<String>) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with(".oom-") && name.strip_suffix(".tmp").is_some() {
            // A write interrupted by a crash: the report was never complete.
            match fs::remove_file(path) {
                Ok(()) => warnings.push(format!("removed {}, left by an interrupted write", path.display())),
                Err(err) => warnings.push(format!("cannot remove {}: {err}", path.display())),
            }
            return;
        }
        let id = name.strip_prefix("oom-").and_then(|n| n.strip_suffix(".json")).filter(|id| valid_id(id));
        let Some(id) = id else {
            self.counters.skipped += 1;
            warnings.push(format!("skipped {}: not an OOM report file", path.display()));
            return;
        };
        match read_report(path, id) {
            Ok((report, bytes)) => {
                self.counters.loaded += 1;
                self.bytes += bytes;
                self.reports.insert(id.to_owned(), Entry { report, bytes, on_disk: true });
            }
            Err(why) => {
                self.counters.skipped += 1;
                warnings.push(format!("skipped {}: {why}", path.display()));
            }
        }
    }

    /// A fresh id for a report made at `time_unix_ms` for `pid` (moved a millisecond on if taken).
    pub fn new_id(&self, mut time_unix_ms: u64, pid: u32) -> String {
        loop {
            let id = make_id(time_unix_ms, pid);
            if !self.reports.contains_key(&id) {
                return id;
            }
            time_unix_ms += 1;
        }
    }

    /// Stores `report` (its `id` from [`ReportStore::new_id`]) and writes it. On a write error the report is
    /// kept in memory and the error returned.
    pub fn save(&mut self, report: OomReport) -> Result<(), std::io::Error> {
        let id = report.id.clone();
        let body = FileBody { format: FILE_FORMAT.to_owned(), version: FILE_VERSION, report };
        let json = serde_json::to_vec_pretty(&body).map_err(std::io::Error::other)?;
        let bytes = json.len() as u64;
        let written = write_atomically(&self.dir, &file_name(&id), &json);
        match &written {
            Ok(()) => self.counters.written += 1,
            Err(_) => self.counters.write_errors += 1,
        }
        if let Some(old) = self.reports.insert(id, Entry { report: body.report, bytes, on_disk: written.is_ok() }) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        self.rotate();
        written
    }

    /// Drops the oldest reports (and their files) until the limits hold; the newest report always stays.
    fn rotate(&mut self) {
        while self.reports.len() > self.limits.max_reports.max(1)
            || (self.bytes > self.limits.max_bytes && self.reports.len() > 1)
        {
            let Some((id, entry)) = self.reports.pop_first() else { break };
            self.bytes -= entry.bytes;
            self.counters.rotated += 1;
            if entry.on_disk {
                let path = self.dir.join(file_name(&id));
                if let Err(err) = fs::remove_file(&path) {
                    log::warn!("removing the old OOM report {}: {err}", path.display());
                }
            }
        }
    }

    /// Every report's summary, oldest first.
    pub fn list(&self) -> Vec<OomSummary> {
        self.reports.values().map(|e| e.report.summary()).collect()
    }

    /// One report.
    pub fn get(&self, id: &str) -> Option<&OomReport> {
        self.reports.get(id).map(|e| &e.report)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters.
    pub fn counters(&self) -> StoreCounters {
        self.counters
    }
}

fn read_report(path: &Path, id: &str) -> Result<(OomReport, u64), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let report = parse_report(&bytes, id)?;
    Ok((report, bytes.len() as u64))
}

/// Parses the contents of a report file that should hold report `id`.
pub fn parse_report(bytes: &[u8], id: &str) -> Result<OomReport, String> {
    let body: FileBody<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a report file ({e})"))?;
    if body.format != FILE_FORMAT || body.version != FILE_VERSION {
        return Err(format!(
            "format {:?} version {}, this build reads {FILE_FORMAT:?} {FILE_VERSION}",
            body.format, body.version
        ));
    }
    let report: OomReport = serde_json::from_value(body.report).map_err(|e| format!("bad report ({e})"))?;
    if report.id != id {
        return Err(format!("holds report {:?}, not {id:?}", report.id));
    }
    Ok(report)
}

/// Writes `dir/name` so that it is either absent or complete, even across a crash.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        // The rename itself reaches the disk with the directory.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
