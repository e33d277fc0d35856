//! Decoding pprof profiles, independently of the daemon's encoder: the messages of `profile.proto`
//! (github.com/google/pprof) that the checks read, transcribed again here.

use std::io::Read as _;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
}

impl Profile {
    /// Gunzips and decodes a `.pb.gz` profile; fails the test otherwise.
    pub fn from_gzip(bytes: &[u8]) -> Self {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut raw).expect("the profile is gzipped");
        Self::decode(raw.as_slice()).expect("the profile is a protobuf Profile")
    }

    /// String `i` of the string table.
    pub fn string(&self, i: i64) -> &str {
        usize::try_from(i).ok().and_then(|i| self.string_table.get(i)).map_or("<bad string index>", String::as_str)
    }

    /// The profile's comments.
    pub fn comments(&self) -> Vec<&str> {
        self.comment.iter().map(|&c| self.string(c)).collect()
    }

    /// The index of the sample type named `name`.
    pub fn value_index(&self, name: &str) -> usize {
        self.sample_type
            .iter()
            .position(|t| self.string(t.r#type) == name)
            .unwrap_or_else(|| panic!("no sample type {name}"))
    }

    /// The sum of value `name` over samples whose `pid` label is `pid`.
    pub fn total(&self, name: &str, pid: u32) -> i64 {
        let i = self.value_index(name);
        self.sample.iter().filter(|s| self.pid(s) == Some(pid)).map(|s| s.value[i]).sum()
    }

    /// The `pid` label of a sample.
    pub fn pid(&self, sample: &Sample) -> Option<u32> {
        let label = sample.label.iter().find(|l| self.string(l.key) == "pid")?;
        u32::try_from(label.num).ok()
    }

    /// The string label `key` of a sample.
    pub fn label(&self, sample: &Sample, key: &str) -> Option<&str> {
        let label = sample.label.iter().find(|l| self.string(l.key) == key)?;
        Some(self.string(label.str))
    }

    /// The function names of a sample's frames, innermost first (`?` for frames without one).
    pub fn functions(&self, sample: &Sample) -> Vec<&str> {
        sample
            .location_id
            .iter()
            .map(|id| {
                let location = self.location.iter().find(|l| l.id == *id).expect("sample refers to a location");
                location
                    .line
                    .first()
                    .and_then(|line| self.function.iter().find(|f| f.id == line.function_id))
                    .map_or("?", |f| self.string(f.name))
            })
            .collect()
    }
}

/// What `go tool pprof -top` (Go's own reader, Debian's `golang-go`) prints for the profile `bytes` with `args`
/// (e.g. `-sample_index=inuse_space`); fails the test unless it reads the profile.
pub fn go_tool_top(bytes: &[u8], args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("profile.pb.gz");
    std::fs::write(&file, bytes).expect("write the profile");
    let mut cmd = std::process::Command::new("go");
    cmd.args(["tool", "pprof", "-top"]).args(args).arg(&file);
    // Go wants a home for its caches; the tests run as root with HOME possibly unset.
    cmd.env("HOME", dir.path()).env("GOCACHE", dir.path().join("cache"));
    let out = crate::run_with_timeout(&mut cmd, std::time::Duration::from_mins(1));
    assert!(out.status.success(), "go tool pprof -top failed\n{}", crate::describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
