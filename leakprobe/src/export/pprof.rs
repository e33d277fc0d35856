//! The pprof profile format: the messages of `profile.proto` (github.com/google/pprof, `proto/profile.proto`)
//! declared with prost's derive, and a builder from stack reports.
//!
//! Only what leakprobe writes is declared; field numbers and types follow `profile.proto` exactly, so any pprof
//! reader decodes it.

use std::{collections::HashMap, io::Write as _};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use crate::protocol::{Frame, HeapProfile, HeapSample, StackReport};

#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, Copy, PartialEq, Message)]
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

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// Sample types, in value order: Go's heap-profile names, so pprof, Pyroscope and Parca recognize them.
/// `inuse_*` are the live (allocated, not freed) objects and bytes; `alloc_*` everything allocated since the
/// stack was first seen.
pub const SAMPLE_TYPES: [(&str, &str); 4] =
    [("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"), ("inuse_space", "bytes")];

/// Interns strings; index 0 is the empty string, as the format requires.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        Self { table: vec![String::new()], index: HashMap::from([(String::new(), 0)]) }
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = i64::try_from(self.table.len()).unwrap_or(i64::MAX);
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn parse_addr(addr: &str) -> u64 {
    u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap_or(0)
}

/// Comment of a profile whose values are exact.
pub const COMMENT_EXACT: &str = "leakprobe: live heap (allocated, not freed), every allocation tracked";
/// Comment of a profile whose values are estimates (sampled mode). pprof has no field for this: the comment
/// says it, and every sample carries the label `estimated=true`.
pub const COMMENT_ESTIMATED: &str = "leakprobe: live heap (allocated, not freed), ESTIMATED from a size-weighted \
     sample (sampled mode): each value is an unbiased estimate, not an exact count";

/// Builds the profile of `stacks` (every stack, even with nothing live: `alloc_*` still counts), taken at
/// `time_nanos` (Unix epoch); `estimated`: the values are sampled-mode estimates.
pub fn profile(stacks: &[StackReport], time_nanos: i64, estimated: bool) -> Profile {
    profile_of(stacks, time_nanos, estimated, HeapSample::InuseSpace, &[])
}

/// [`profile`] with `default` as its default sample type and `notes` as comments after the first.
fn profile_of(
    stacks: &[StackReport],
    time_nanos: i64,
    estimated: bool,
    default: HeapSample,
    notes: &[String],
) -> Profile {
    let mut strings = Strings::new();
    let sample_type: Vec<ValueType> =
        SAMPLE_TYPES.iter().map(|(t, u)| ValueType { r#type: strings.get(t), unit: strings.get(u) }).collect();
    let mut mappings: HashMap<String, Mapping> = HashMap::new();
    let mut functions: HashMap<(String, String), Function> = HashMap::new();
    let mut locations: HashMap<(u32, String), Location> = HashMap::new();
    let (pid_key, comm_key, stack_key) = (strings.get("pid"), strings.get("comm"), strings.get("stack_id"));
    let (service_key, container_key) = (strings.get("service"), strings.get("container_id"));
    let estimated_label =
        estimated.then(|| Label { key: strings.get("estimated"), str: strings.get("true"), ..Label::default() });
    let mut samples = Vec::with_capacity(stacks.len());
    for stack in stacks {
        let mut location_id = Vec::with_capacity(stack.frames.len());
        for frame in &stack.frames {
            let next_id = locations.len() as u64 + 1;
            let location = locations.entry((stack.pid, frame.addr.clone())).or_insert_with(|| Location {
                id: next_id,
                mapping_id: mapping_id(&mut mappings, &mut strings, frame),
                address: parse_addr(&frame.addr),
                line: line(&mut functions, &mut strings, frame).into_iter().collect(),
            });
            location_id.push(location.id);
        }
        // In sampled mode these are estimates: the sampled allocations scaled by their weights.
        let value = vec![
            signed(stack.total_count),
            signed(stack.total_bytes),
            signed(stack.live_count),
            signed(stack.live_bytes),
        ];
        let mut label = vec![
            Label { key: pid_key, num: i64::from(stack.pid), ..Label::default() },
            Label { key: comm_key, str: strings.get(&stack.comm), ..Label::default() },
            Label { key: stack_key, str: strings.get(&stack.stack_id), ..Label::default() },
            Label { key: service_key, str: strings.get(&stack.identity.service(&stack.comm)), ..Label::default() },
        ];
        if let Some(id) = &stack.identity.container_id {
            label.push(Label { key: container_key, str: strings.get(id), ..Label::default() });
        }
        label.extend(estimated_label);
        samples.push(Sample { location_id, value, label });
    }
    let mut mapping: Vec<Mapping> = mappings.into_values().collect();
    mapping.sort_by_key(|m| m.id);
    let mut function: Vec<Function> = functions.into_values().collect();
    function.sort_by_key(|f| f.id);
    let mut location: Vec<Location> = locations.into_values().collect();
    location.sort_by_key(|l| l.id);
    let period_type = Some(ValueType { r#type: strings.get("space"), unit: strings.get("bytes") });
    let mut comment = vec![strings.get(if estimated { COMMENT_ESTIMATED } else { COMMENT_EXACT })];
    comment.extend(notes.iter().map(|note| strings.get(note)));
    let default_sample_type = strings.get(default.name());
    Profile {
        sample_type,
        sample: samples,
        mapping,
        location,
        function,
        string_table: strings.table,
        time_nanos,
        period_type,
        period: 1,
        comment,
        default_sample_type,
    }
}

fn mapping_id(mappings: &mut HashMap<String, Mapping>, strings: &mut Strings, frame: &Frame) -> u64 {
    let Some(module) = &frame.module else { return 0 };
    let next_id = mappings.len() as u64 + 1;
    mappings
        .entry(module.clone())
        .or_insert_with(|| Mapping {
            id: next_id,
            filename: strings.get(module),
            // Frames come symbolized: a reader must not try to symbolize them again.
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
        })
        .id
}

fn line(functions: &mut HashMap<(String, String), Function>, strings: &mut Strings, frame: &Frame) -> Option<Line> {
    let name = frame.function.as_deref()?;
    let file = frame.file.as_deref().unwrap_or("");
    let next_id = functions.len() as u64 + 1;
    let function = functions.entry((name.to_owned(), file.to_owned())).or_insert_with(|| Function {
        id: next_id,
        name: strings.get(name),
        system_name: strings.get(name),
        filename: strings.get(file),
    });
    Some(Line { function_id: function.id, line: frame.line.map_or(0, i64::from) })
}

/// Nanoseconds since the Unix epoch, now: a profile's time.
pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The gzipped protobuf of [`profile`].
pub fn encode(stacks: &[StackReport], time_nanos: i64, estimated: bool) -> std::io::Result<Vec<u8>> {
    gzip(&profile(stacks, time_nanos, estimated))
}

/// What a heap profile leaves out, as its comments say it (none when it holds everything).
pub fn heap_notes(heap: &HeapProfile) -> Vec<String> {
    let mut notes = Vec::new();
    if heap.omitted_stacks > 0 {
        notes.push(format!(
            "leakprobe: {} more stacks, beyond those with the most {}, are summed per process as {}",
            heap.omitted_stacks,
            heap.sample.name(),
            crate::protocol::OTHER_STACKS,
        ));
    }
    if heap.unsymbolized_stacks > 0 {
        notes.push(format!(
            "leakprobe: {} stacks were not symbolized in time: their frames are addresses only",
            heap.unsymbolized_stacks
        ));
    }
    notes
}

/// The gzipped profile of `stacks`, some or all of `heap`'s, with its default sample type and its notes.
pub fn encode_heap(heap: &HeapProfile, stacks: &[StackReport], time_nanos: i64) -> std::io::Result<Vec<u8>> {
    gzip(&profile_of(stacks, time_nanos, heap.estimated, heap.sample, &heap_notes(heap)))
}

fn gzip(profile: &Profile) -> std::io::Result<Vec<u8>> {
    let bytes = profile.encode_to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(bytes.len() / 2), Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()
}
