use std::io::Read as _;

use flate2::read::GzDecoder;
use prost::Message as _;

use super::{pprof::Profile, *};

fn frame(addr: u64, function: Option<&str>, line: Option<u32>) -> Frame {
    Frame {
        addr: format!("{addr:#x}"),
        function: function.map(str::to_owned),
        file: function.map(|_| "/src/leaker.c".to_owned()),
        line,
        module: Some("/usr/bin/leaker".to_owned()),
    }
}

fn stack(pid: u32, id: &str, live: (u64, u64), total: (u64, u64), frames: Vec<Frame>) -> StackReport {
    StackReport::for_test(pid, id, live, total, frames)
}

fn sample_stacks() -> Vec<StackReport> {
    vec![
        stack(
            7,
            "aaaa",
            (10_000, 10),
            (12_000, 12),
            vec![frame(0x1136, Some("leak_alpha"), Some(12)), frame(0x1200, Some("main"), Some(40))],
        ),
        stack(
            7,
            "bbbb",
            (300, 3),
            (300, 3),
            vec![frame(0x1150, Some("leak_beta"), Some(20)), frame(0x1210, Some("main"), Some(41))],
        ),
        // Nothing live: only in pprof's alloc_* values.
        stack(7, "cccc", (0, 0), (5_000, 50), vec![frame(0x1160, Some("churn"), Some(30))]),
        stack(8, "dddd", (64, 1), (64, 1), vec![frame(0x9999, None, None)]),
    ]
}

#[test]
fn folded_is_root_first_merged_and_sorted() {
    let text = folded(&sample_stacks());
    assert_eq!(
        text,
        "leaker (7);main;leak_alpha 10000\nleaker (7);main;leak_beta 300\nleaker (8);0x9999 in leaker 64\n"
    );
}

#[test]
fn folded_escapes_separators() {
    let stacks = vec![stack(1, "x", (1, 1), (1, 1), vec![frame(0x1, Some("a;b\nc"), None)])];
    assert_eq!(folded(&stacks), "leaker (1);a:b c 1\n");
}

fn decode(bytes: &[u8]) -> Profile {
    let mut raw = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut raw).expect("gzip");
    Profile::decode(raw.as_slice()).expect("protobuf")
}

#[test]
fn pprof_round_trips_with_totals_and_names() {
    let stacks = sample_stacks();
    let bytes = render(ExportFormat::Pprof, &stacks, ExportContext { pid: None, time_unix_ns: 5, estimated: false })
        .expect("pprof");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip magic");
    let profile = decode(&bytes);
    let s = |i: i64| profile.string_table[usize::try_from(i).expect("index")].as_str();
    assert_eq!(profile.string_table[0], "");
    let types: Vec<(&str, &str)> = profile.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
    assert_eq!(types, pprof::SAMPLE_TYPES);
    assert_eq!(s(profile.default_sample_type), "inuse_space");
    assert_eq!(profile.time_nanos, 5);
    let sum = |i: usize| profile.sample.iter().map(|x| x.value[i]).sum::<i64>();
    assert_eq!((sum(2), sum(3)), (14, 10_364), "inuse objects and bytes");
    assert_eq!((sum(0), sum(1)), (66, 17_364), "alloc objects and bytes");
    // The leaf of the first sample is leak_alpha at line 12; `main` is one function shared by both stacks.
    let location = |id: u64| profile.location.iter().find(|l| l.id == id).expect("location");
    let leaf = location(profile.sample[0].location_id[0]);
    let function = profile.function.iter().find(|f| f.id == leaf.line[0].function_id).expect("function");
    assert_eq!((s(function.name), leaf.line[0].line, leaf.address), ("leak_alpha", 12, 0x1136));
    assert_eq!(profile.function.iter().filter(|f| s(f.name) == "main").count(), 1);
    assert!(profile.mapping.iter().all(|m| m.has_functions && s(m.filename) == "/usr/bin/leaker"));
    // Labels say which process.
    let pid = profile.sample[3].label.iter().find(|l| s(l.key) == "pid").expect("pid label");
    assert_eq!(pid.num, 8);
    // Exact figures say so; no sample is labelled estimated.
    assert_eq!(profile.comment.iter().map(|&c| s(c)).collect::<Vec<_>>(), [pprof::COMMENT_EXACT]);
    assert!(profile.sample.iter().all(|x| x.label.iter().all(|l| s(l.key) != "estimated")));
    // Every id is unique and referenced ids exist.
    for sample in &profile.sample {
        for id in &sample.location_id {
            location(*id);
        }
    }
}

#[test]
fn pprof_of_sampled_mode_says_estimated() {
    let stacks = sample_stacks();
    let bytes = render(ExportFormat::Pprof, &stacks, ExportContext { pid: None, time_unix_ns: 5, estimated: true })
        .expect("pprof");
    let profile = decode(&bytes);
    let s = |i: i64| profile.string_table[usize::try_from(i).expect("index")].as_str();
    let comments: Vec<&str> = profile.comment.iter().map(|&c| s(c)).collect();
    assert_eq!(comments, [pprof::COMMENT_ESTIMATED]);
    assert!(comments[0].contains("ESTIMATED"));
    for sample in &profile.sample {
        let label = sample.label.iter().find(|l| s(l.key) == "estimated").expect("an estimated label on every sample");
        assert_eq!(s(label.str), "true");
    }
}

#[test]
fn svg_is_a_flamegraph_naming_the_leak() {
    let bytes =
        render(ExportFormat::Svg, &sample_stacks(), ExportContext { pid: Some(7), time_unix_ns: 0, estimated: false })
            .expect("svg");
    let text = String::from_utf8(bytes).expect("utf-8");
    // inferno's SVG starts with a DOCTYPE.
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..roxmltree::ParsingOptions::default() };
    let doc = roxmltree::Document::parse_with_options(&text, options).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let titles: Vec<&str> =
        doc.descendants().filter(|n| n.tag_name().name() == "title").filter_map(|n| n.text()).collect();
    assert!(titles.iter().any(|t| t.starts_with("leak_alpha (10,000 bytes")), "{titles:?}");
    assert!(!text.contains("churn"), "nothing live in churn: not drawn");
}

#[test]
fn svg_of_nothing_is_an_error_not_an_empty_picture() {
    let err = svg(&[], ExportContext { pid: Some(3), time_unix_ns: 0, estimated: false }).expect_err("empty");
    assert_eq!(err.to_string(), "no live allocations to draw for pid 3");
}

#[test]
fn json_is_a_top_response() {
    let bytes = render(ExportFormat::Json, &sample_stacks(), ExportContext::default()).expect("json");
    let back: TopResponse = serde_json::from_slice(&bytes).expect("parses");
    assert_eq!(back.stacks, sample_stacks());
}

#[test]
fn a_heap_profile_says_what_it_left_out() {
    let heap = crate::protocol::HeapProfile {
        stacks: sample_stacks(),
        sample: crate::protocol::HeapSample::AllocSpace,
        omitted_stacks: 12,
        unsymbolized_stacks: 3,
        ..crate::protocol::HeapProfile::default()
    };
    let profile = decode(&pprof::encode_heap(&heap, &heap.stacks, 5).expect("pprof"));
    let s = |i: i64| profile.string_table[usize::try_from(i).expect("index")].as_str();
    assert_eq!(s(profile.default_sample_type), "alloc_space", "the sample type asked");
    let comments: Vec<&str> = profile.comment.iter().map(|&c| s(c)).collect();
    assert_eq!(comments.len(), 3, "{comments:?}");
    assert_eq!(comments[0], pprof::COMMENT_EXACT);
    assert!(comments[1].contains("12 more stacks") && comments[1].contains("alloc_space"), "{comments:?}");
    assert!(comments[1].contains(crate::protocol::OTHER_STACKS), "{comments:?}");
    assert!(comments[2].contains("3 stacks were not symbolized"), "{comments:?}");
    let whole = crate::protocol::HeapProfile { stacks: sample_stacks(), ..crate::protocol::HeapProfile::default() };
    assert!(pprof::heap_notes(&whole).is_empty(), "nothing left out, nothing said");
}
