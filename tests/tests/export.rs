//! `leakprobe export` and `GET /v1/export`: a pprof profile whose totals are the daemon's, folded stacks, a real
//! flamegraph SVG naming the leak, JSON, and errors.

use leakprobe_tests::expect::{ALPHA_COUNT, ALPHA_SIZE};
use leakprobe_tests::http::get;
use leakprobe_tests::pprof::Profile;
use leakprobe_tests::{Daemon, StackExt, describe, dump, observe_leaker};

fn export(daemon: &Daemon, format: &str, pid: u32) -> Vec<u8> {
    let file = daemon.dir().join(format!("export.{format}"));
    let pid = pid.to_string();
    let out = daemon.run_cli(&[
        "export",
        "--socket",
        daemon.socket_str(),
        "--format",
        format,
        "--pid",
        &pid,
        "-o",
        file.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "export --format {format}\n{}", describe(&out));
    assert!(out.stdout.is_empty(), "with -o nothing goes to stdout\n{}", describe(&out));
    std::fs::read(&file).expect("read the export")
}

#[test]
fn pprof_totals_equal_the_daemons() {
    let (daemon, fixture, stacks) = observe_leaker("basic");
    let pid = fixture.pid();
    let profile = Profile::from_gzip(&export(&daemon, "pprof", pid));
    let live: u64 = stacks.iter().map(StackExt::live_bytes).sum();
    let count: u64 = stacks.iter().map(StackExt::live_count).sum();
    let total: u64 = stacks.iter().map(StackExt::total_bytes).sum();
    let as_i64 = |v: u64| i64::try_from(v).expect("fits");
    assert_eq!(profile.total("inuse_space", pid), as_i64(live), "{}", dump(&stacks));
    assert_eq!(profile.total("inuse_objects", pid), as_i64(count), "{}", dump(&stacks));
    assert_eq!(profile.total("alloc_space", pid), as_i64(total), "{}", dump(&stacks));
    assert!(profile.sample.iter().all(|s| profile.pid(s) == Some(pid)), "only the asked pid");
    let space = profile.value_index("inuse_space");
    let alpha = profile
        .sample
        .iter()
        .find(|s| profile.functions(s).first() == Some(&"leak_alpha"))
        .expect("a sample whose leaf is leak_alpha");
    assert_eq!(alpha.value[space], as_i64(ALPHA_COUNT * ALPHA_SIZE));
    assert_eq!(profile.functions(alpha).get(1), Some(&"via_alpha"), "{:?}", profile.functions(alpha));
}

#[test]
fn folded_and_svg_name_the_leak() {
    let (daemon, fixture, _stacks) = observe_leaker("basic");
    let pid = fixture.pid();
    let folded = String::from_utf8(export(&daemon, "folded", pid)).expect("utf-8");
    let root = format!("leaker ({pid});");
    assert!(folded.lines().all(|l| l.starts_with(&root)), "{folded}");
    let alpha = folded.lines().find(|l| l.contains(";leak_alpha ")).unwrap_or_else(|| panic!("{folded}"));
    assert!(alpha.ends_with(&format!(";via_alpha;leak_alpha {}", ALPHA_COUNT * ALPHA_SIZE)), "{alpha}");

    let svg = String::from_utf8(export(&daemon, "svg", pid)).expect("utf-8");
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..roxmltree::ParsingOptions::default() };
    let doc = roxmltree::Document::parse_with_options(&svg, options).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let titles: Vec<&str> =
        doc.descendants().filter(|n| n.tag_name().name() == "title").filter_map(|n| n.text()).collect();
    assert!(titles.iter().any(|t| t.starts_with("leak_alpha (10,000 bytes")), "frame titles: {titles:?}");
    let frames = doc.descendants().filter(|n| n.tag_name().name() == "rect").count();
    assert!(frames > 5, "a flamegraph has a rectangle per frame: {frames}");
}

#[test]
fn api_export_content_types_and_errors() {
    let (daemon, fixture, stacks) = observe_leaker("basic");
    let pid = fixture.pid();
    for (format, content_type) in [
        ("svg", "image/svg+xml"),
        ("folded", "text/plain; charset=utf-8"),
        ("json", "application/json"),
        ("pprof", "application/octet-stream"),
    ] {
        let response = get(daemon.socket(), &format!("/v1/export?format={format}&pid={pid}"));
        assert_eq!(response.status, Some(200), "{format}: {response}");
        assert_eq!(response.header("content-type").as_deref(), Some(content_type), "{format}");
    }
    let json = get(daemon.socket(), &format!("/v1/export?format=json&pid={pid}")).json();
    assert_eq!(json["stacks"].as_array().map(Vec::len), Some(stacks.len()), "{}", dump(&stacks));

    let bad = get(daemon.socket(), "/v1/export?format=png");
    assert_eq!(bad.status, Some(400), "{bad}");
    assert!(bad.json()["error"].as_str().is_some_and(|e| e.contains("format")), "{bad}");
    // No process has this pid: nothing to draw.
    let empty = get(daemon.socket(), "/v1/export?format=svg&pid=4294967295");
    assert_eq!(empty.status, Some(404), "{empty}");
    let folded = get(daemon.socket(), "/v1/export?format=folded&pid=4294967295");
    assert_eq!((folded.status, folded.body.as_str()), (Some(200), ""), "{folded}");
}
