//! Perf maps of JIT runtimes: `/tmp/perf-PID.map`, one `START SIZE NAME` line per compiled function (hex
//! numbers, with or without `0x`), written by Node.js with `--perf-basic-prof`, by the JVM with
//! `jcmd PID Compiler.perfmap`, and by other JITs. A frame outside every file-backed mapping is looked up here.
//!
//! The file is read in the process's own mount namespace, with its namespace pid:
//! `/proc/PID/root/tmp/perf-NSPID.map`. Runtimes append to it as they compile: it is read incrementally, from
//! where the last read stopped, when an address is not found and the file grew. A later entry covering an
//! earlier one's addresses replaces it (code moved or recompiled there). Bounded: at most [`MAX_ENTRIES`]
//! entries and [`MAX_BYTES`] bytes read per process; what lies beyond is counted, not kept.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Entries kept per process.
pub const MAX_ENTRIES: usize = 500_000;
/// Bytes of one perf map read at most (a Node.js service writes a few MB over a day).
pub const MAX_BYTES: u64 = 64 << 20;
/// Bytes read per look at the file: a huge file is taken in steps, not at once.
const READ_STEP: u64 = 8 << 20;
/// A map is looked at again for new entries at most this often.
pub const RECHECK: Duration = Duration::from_secs(1);

/// One process's perf map as read so far.
#[derive(Debug)]
pub struct PerfMap {
    path: PathBuf,
    /// The path as the process sees it, shown as the frames' module.
    pub shown: Arc<str>,
    /// Owner the file must have: the process's, or root.
    uid: u32,
    /// Start -> (end, name).
    entries: BTreeMap<u64, (u64, Arc<str>)>,
    names: HashSet<Arc<str>>,
    /// Bytes parsed (up to the last complete line).
    read_to: u64,
    /// (device, inode) of the file read: another file there (the pid reused) starts over.
    file: Option<(u64, u64)>,
    checked: Option<Instant>,
    /// Entries not kept: past [`MAX_ENTRIES`], or malformed lines.
    pub dropped: u64,
}

/// A function of a perf map's name split as a frame shows it: Node.js writes `JS:*name /path/app.js:12:5`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitName {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl PerfMap {
    /// The perf map of process `pid` (not read yet): `/proc/PID/root/tmp/perf-NSPID.map`, owned by `uid`.
    pub fn of(pid: u32, ns_pid: u32, uid: u32) -> Self {
        Self::at(
            PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{ns_pid}.map")),
            format!("/tmp/perf-{ns_pid}.map"),
            uid,
        )
    }

    /// The perf map at `path`, shown as `shown`.
    pub fn at(path: PathBuf, shown: String, uid: u32) -> Self {
        Self {
            path,
            shown: Arc::from(shown),
            uid,
            entries: BTreeMap::new(),
            names: HashSet::new(),
            read_to: 0,
            file: None,
            checked: None,
            dropped: 0,
        }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name of the function holding `addr`, reading what the runtime appended since the last read if it is
    /// not known yet (at most once per [`RECHECK`]).
    pub fn lookup(&mut self, addr: u64, now: Instant) -> Option<Arc<str>> {
        if let Some(name) = self.find(addr) {
            return Some(name);
        }
        if self.checked.is_some_and(|at| now.duration_since(at) < RECHECK) {
            return None;
        }
        self.checked = Some(now);
        if let Err(err) = self.read_more() {
            log::debug!("perf map {}: {err}", self.path.display());
        }
        self.find(addr)
    }

    pub(super) fn find(&self, addr: u64) -> Option<Arc<str>> {
        let (_, (end, name)) = self.entries.range(..=addr).next_back()?;
        (addr < *end).then(|| name.clone())
    }

    /// Reads what was appended since the last read (up to [`READ_STEP`]), whole lines only.
    pub fn read_more(&mut self) -> std::io::Result<()> {
        // Not through a symbolic link, and not blocking on a FIFO: the file lies in a directory the process
        // (any user) can write to.
        let mut file =
            fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&self.path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() || (meta.uid() != self.uid && meta.uid() != 0) {
            return Err(std::io::Error::other("not a regular file owned by the process's user"));
        }
        let identity = (meta.dev(), meta.ino());
        if self.file != Some(identity) || meta.len() < self.read_to {
            // Another file, or one cut short: start over.
            *self = Self { checked: self.checked, ..Self::at(self.path.clone(), self.shown.to_string(), self.uid) };
            self.file = Some(identity);
        }
        let end = meta.len().min(MAX_BYTES);
        if end <= self.read_to {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.read_to))?;
        let mut bytes = Vec::new();
        file.take((end - self.read_to).min(READ_STEP)).read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |last| last + 1);
        self.parse(&bytes[..complete]);
        self.read_to += complete as u64;
        Ok(())
    }

    /// Adds the entries of whole lines of a perf map.
    pub fn parse(&mut self, bytes: &[u8]) {
        for line in String::from_utf8_lossy(bytes).lines() {
            match parse_line(line) {
                Some((start, size, name)) if self.entries.len() < MAX_ENTRIES => self.insert(start, size, name),
                _ if line.trim().is_empty() => {}
                _ => self.dropped += 1,
            }
        }
    }

    fn insert(&mut self, start: u64, size: u64, name: &str) {
        let end = start.saturating_add(size.max(1));
        // A later entry replaces what it covers: code recompiled or moved into those addresses.
        let covered: Vec<u64> = self.entries.range(start..end).map(|(&s, _)| s).collect();
        for s in covered {
            self.entries.remove(&s);
        }
        if let Some((_, (before_end, _))) = self.entries.range_mut(..start).next_back()
            && *before_end > start
        {
            *before_end = start;
        }
        let name = if let Some(name) = self.names.get(name) {
            name.clone()
        } else {
            let name: Arc<str> = Arc::from(name);
            self.names.insert(name.clone());
            name
        };
        self.entries.insert(start, (end, name));
    }

    /// Where the map is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x").unwrap_or(text), 16).ok()
}

/// `START SIZE NAME`.
fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let mut parts = line.trim_end().splitn(3, ' ');
    let start = hex(parts.next()?)?;
    let size = hex(parts.next()?)?;
    let name = parts.next().unwrap_or("").trim();
    (!name.is_empty()).then_some((start, size, name))
}

/// Splits a perf map name into function, file and line where the runtime wrote them as a trailing
/// `PATH:LINE[:COLUMN]` (Node.js); other names (Java's `void Leak.hold()`) are the function as they are.
pub fn split_name(name: &str) -> JitName {
    let whole = || JitName { function: name.to_owned(), file: None, line: None };
    let Some((function, location)) = name.rsplit_once(' ') else { return whole() };
    let numbers: Vec<&str> = location.rsplitn(3, ':').collect();
    let (file, line) = match numbers.as_slice() {
        [column, line, file] if column.parse::<u32>().is_ok() => (*file, line.parse::<u32>().ok()),
        [line, file, ..] => (*file, line.parse::<u32>().ok()),
        _ => return whole(),
    };
    let file = file.strip_prefix("file://").unwrap_or(file);
    match line {
        Some(line) if !file.is_empty() => {
            JitName { function: function.to_owned(), file: Some(file.to_owned()), line: Some(line) }
        }
        _ => whole(),
    }
}

/// A function's name without what only says how it was compiled, so that one function recompiled at another
/// tier is the same function: V8 marks `~` (interpreted), `^` (Sparkplug), `+` (`Maglev`), `*` (`TurboFan`).
pub fn identity_name(name: &str) -> &str {
    match name.strip_prefix("JS:") {
        Some(rest) if rest.starts_with(['~', '^', '+', '*']) => &rest[1..],
        Some(rest) => rest,
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const NODE: &str = "\
28e5a8a51cde 2b JS:~leakSessions /srv/app.js:2:22
7f3354007800 108 JS:^leakSessions /srv/app.js:2:22
18c4000 300 Builtin:DeoptimizationEntry_Eager
";
    const JAVA: &str = "0x00007fd0a95eda80 0x0000000000000590 void Leak.holdDirectBuffer()\n";

    fn map() -> PerfMap {
        PerfMap::at(PathBuf::from("/nonexistent"), "/tmp/perf-1.map".into(), 0)
    }

    #[test]
    fn node_and_java_lines_are_parsed() {
        let mut m = map();
        m.parse(NODE.as_bytes());
        m.parse(JAVA.as_bytes());
        m.parse(b"garbage\nzz 10 x\n\n");
        assert_eq!(m.len(), 4);
        assert_eq!(m.dropped, 2);
        assert_eq!(m.find(0x7f33_5400_7800).as_deref(), Some("JS:^leakSessions /srv/app.js:2:22"));
        assert_eq!(m.find(0x7f33_5400_7907).as_deref(), Some("JS:^leakSessions /srv/app.js:2:22"));
        assert_eq!(m.find(0x7f33_5400_7908), None, "past the end");
        assert_eq!(m.find(0x7fd0_a95e_db00).as_deref(), Some("void Leak.holdDirectBuffer()"));
        assert_eq!(m.find(0x10), None);
    }

    #[test]
    fn later_entries_replace_what_they_cover() {
        let mut m = map();
        m.parse(b"1000 100 old\n1080 100 moved\n2000 10 other\n");
        assert_eq!(m.find(0x1010).as_deref(), Some("old"), "the part not covered stays");
        assert_eq!(m.find(0x1090).as_deref(), Some("moved"));
        m.parse(b"1000 1000 recompiled\n");
        assert_eq!(m.find(0x1090).as_deref(), Some("recompiled"));
        assert_eq!(m.find(0x2005).as_deref(), Some("other"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn names_split_into_function_file_and_line() {
        let js = split_name("JS:*leakSessions /srv/app.js:12:5");
        assert_eq!(
            js,
            JitName { function: "JS:*leakSessions".into(), file: Some("/srv/app.js".into()), line: Some(12) }
        );
        let url = split_name("JS:~ file:///srv/app.mjs:3:1");
        assert_eq!((url.function.as_str(), url.file.as_deref(), url.line), ("JS:~", Some("/srv/app.mjs"), Some(3)));
        let java = split_name("void Leak.holdDirectBuffer()");
        assert_eq!((java.function.as_str(), java.file, java.line), ("void Leak.holdDirectBuffer()", None, None));
        assert_eq!(split_name("Builtin:ArrayPrototypePush").function, "Builtin:ArrayPrototypePush");
        assert_eq!(split_name("int A.f(java.lang.String, int)").file, None);
        assert_eq!(identity_name("JS:*leakSessions"), identity_name("JS:~leakSessions"));
        assert_eq!(identity_name("JS:^leakSessions"), "leakSessions");
        assert_eq!(identity_name("void Leak.hold()"), "void Leak.hold()");
    }

    #[test]
    fn the_file_is_read_as_it_grows_whole_lines_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("perf-1.map");
        let mut file = fs::File::create(&path).expect("create");
        file.write_all(b"1000 10 first\n2000 10 sec").expect("write");
        let uid = fs::metadata(&path).expect("meta").uid();
        let mut m = PerfMap::at(path.clone(), "/tmp/perf-1.map".into(), uid);
        let t0 = Instant::now();
        assert_eq!(m.lookup(0x1001, t0).as_deref(), Some("first"));
        assert_eq!(m.lookup(0x2001, t0), None, "an unfinished line is not read");
        file.write_all(b"ond\n").expect("write");
        assert_eq!(m.lookup(0x2001, t0), None, "looked at once per RECHECK");
        assert_eq!(m.lookup(0x2001, t0 + RECHECK).as_deref(), Some("second"));
        // A symbolic link is not followed.
        let link = dir.path().join("perf-2.map");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let mut linked = PerfMap::at(link, "/tmp/perf-2.map".into(), uid);
        assert!(linked.read_more().is_err());
        assert!(linked.is_empty());
        // A file of another owner is refused.
        let mut foreign = PerfMap::at(path, "/tmp/perf-1.map".into(), uid.wrapping_add(1));
        if uid != 0 {
            assert!(foreign.read_more().is_err());
        } else {
            assert!(foreign.read_more().is_ok(), "root's files are accepted");
        }
    }
}
