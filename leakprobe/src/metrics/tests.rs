use std::collections::BTreeMap;

use super::*;
use crate::{
    core::analysis::{Verdict, VerdictConfig},
    protocol::{
        AgeReport, AnalysisSettings, DiscoveryStatus, Frame, FrozenReport, GrowthReport, ProcessIdentity, TableSizes,
    },
};

fn status() -> StatusResponse {
    StatusResponse {
        version: "0.1.0".into(),
        pid: 1,
        uptime_seconds: 42,
        mode: "full".into(),
        sample_interval_bytes: None,
        return_probes: "session".into(),
        attach_points: Vec::new(),
        kernel_counters: BTreeMap::from([
            ("allocs".into(), 100),
            ("ringbuf_full_alloc".into(), 2),
            ("live_map_full".into(), 1),
        ]),
        daemon_counters: BTreeMap::from([
            ("events".into(), 90),
            ("something_new".into(), 1),
            ("discovery_known_files".into(), 12),
        ]),
        tables: TableSizes { live_bytes: 4096, max_stacks: 65_536, ..TableSizes::default() },
        features: BTreeMap::new(),
        oom_kills_by_comm: BTreeMap::from([("leaker".into(), 3)]),
        oom_report_dir: None,
        tier0: None,
        tier1: None,
        budget: None,
        analysis: AnalysisSettings { interval_seconds: 5.0, window_seconds: 600.0, verdict: VerdictConfig::default() },
        discovery: DiscoveryStatus::default(),
        unwind: None,
        traced_pid: None,
    }
}

fn growth(rate: f64) -> GrowthReport {
    GrowthReport { rate_bytes_per_second: rate, ..GrowthReport::default() }
}

fn snapshot() -> MetricsSnapshot {
    let process = ProcessReport {
        pid: 7,
        comm: "leaker".into(),
        live_bytes: 10_000,
        live_count: 10,
        stacks: 2,
        heap_growth: growth(20.5),
        verdict: Verdict::Leaking,
        verdict_source: "heap".into(),
        frozen: None,
        ages: AgeReport::default(),
        rss_bytes: Some(1 << 20),
        rss_anon_bytes: Some(1 << 19),
        rss_file_bytes: Some(1 << 18),
        rss_shmem_bytes: Some(4096),
        swap_bytes: Some(0),
        rss_growth: growth(100.0),
        rss_anon_growth: growth(0.0),
        swap_growth: growth(0.0),
        heap_share_of_anon_growth: None,
        allocs_before_probes: None,
        identity: ProcessIdentity::default(),
    };
    let without_rss = ProcessReport {
        pid: 9,
        comm: "new".into(),
        rss_bytes: None,
        frozen: Some(FrozenReport { since_unix_ms: 5, why: "CPU budget".into() }),
        ..process.clone()
    };
    let stack = StackReport {
        pid: 7,
        comm: "leaker".into(),
        stack_id: "00000000000000ab".into(),
        live_bytes: 10_000,
        live_count: 10,
        total_bytes: 10_000,
        total_count: 10,
        first_alloc_unix_ms: 0,
        last_alloc_unix_ms: 0,
        truncated: false,
        growth: growth(20.5),
        verdict: Verdict::Leaking,
        ages: AgeReport::default(),
        frozen: None,
        frames: vec![Frame { addr: "0x1136".into(), function: Some("leak_alpha".into()), ..Frame::default() }],
        identity: ProcessIdentity::default(),
    };
    let anonymous = StackReport {
        stack_id: "00000000000000cd".into(),
        frames: Vec::new(),
        frozen: Some(FrozenReport { since_unix_ms: 5, why: "CPU budget".into() }),
        ..stack.clone()
    };
    MetricsSnapshot {
        status: status(),
        processes: vec![process, without_rss],
        stacks: vec![stack, anonymous],
        faults: Vec::new(),
        identities: HashMap::from([(
            7,
            ProcessIdentity { unit: Some("web.service".into()), ..ProcessIdentity::default() },
        )]),
        own: Some(OwnProcess { cpu_seconds: 1.5, threads: 3, max_fds: Some(1024), ..OwnProcess::default() }),
    }
}

#[test]
fn names_have_units_and_labels() {
    let text = encode_snapshot(&snapshot()).expect("encodes");
    for line in [
        r#"leakprobe_process_heap_live_bytes{pid="7",comm="leaker",service="web",container_id=""} 10000.0"#,
        r#"leakprobe_process_rss_bytes{pid="7",comm="leaker",service="web",container_id=""} 1048576.0"#,
        r#"leakprobe_process_rss_file_bytes{pid="7",comm="leaker",service="web",container_id=""} 262144.0"#,
        r#"leakprobe_process_rss_shmem_bytes{pid="7",comm="leaker",service="web",container_id=""} 4096.0"#,
        r#"leakprobe_process_heap_growth_bytes_per_second{pid="7",comm="leaker",service="web",container_id=""} 20.5"#,
        r#"leakprobe_process_rss_growth_bytes_per_second{pid="7",comm="leaker",service="web",container_id=""} 100.0"#,
        r#"leakprobe_stack_live_bytes{pid="7",comm="leaker",service="web",container_id="",stack_id="00000000000000ab",function="leak_alpha"} 10000.0"#,
        r#"leakprobe_stack_growth_bytes_per_second{pid="7",comm="leaker",service="web",container_id="",stack_id="00000000000000ab",function="leak_alpha"} 20.5"#,
        r#"leakprobe_stack_leaking{pid="7",comm="leaker",service="web",container_id="",stack_id="00000000000000cd",function="(no stack)"} 1.0"#,
        r#"leakprobe_stack_frozen{pid="7",comm="leaker",service="web",container_id="",stack_id="00000000000000cd",function="(no stack)"} 1.0"#,
        r#"leakprobe_stack_frozen{pid="7",comm="leaker",service="web",container_id="",stack_id="00000000000000ab",function="leak_alpha"} 0.0"#,
        r#"leakprobe_process_heap_frozen{pid="9",comm="new",service="new",container_id=""} 1.0"#,
        r#"leakprobe_process_heap_frozen{pid="7",comm="leaker",service="web",container_id=""} 0.0"#,
        "leakprobe_kernel_allocs_total 100",
        r#"leakprobe_kernel_ringbuf_full_total{kind="alloc"} 2"#,
        "# TYPE leakprobe_kernel_ringbuf_full counter",
        r#"leakprobe_kernel_map_full_total{kind="live"} 1"#,
        "process_threads 3.0",
        "process_cpu_seconds_total 1.5",
        "process_max_fds 1024.0",
        "leakprobe_daemon_events_total 90",
        // A level that falls as well as rises is a gauge, not a counter.
        "# TYPE leakprobe_daemon_discovery_known_files gauge",
        "leakprobe_daemon_discovery_known_files 12.0",
        r#"leakprobe_oom_kills_total{comm="leaker"} 3"#,
        "leakprobe_heap_live_bytes 4096.0",
        "leakprobe_stacks_limit 65536.0",
        r#"leakprobe_build_info{version="0.1.0"} 1.0"#,
        "# HELP leakprobe_daemon_something_new The daemon counter something_new of `leakprobe status`.",
        "# UNIT leakprobe_process_heap_live_bytes bytes",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    // No RSS sample yet: no RSS series for that process, but its heap is there.
    assert!(!text.contains(r#"leakprobe_process_rss_bytes{pid="9""#), "{text}");
    assert!(text.contains(r#"leakprobe_process_heap_live_bytes{pid="9""#), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn an_empty_snapshot_still_encodes() {
    let text = encode_snapshot(&MetricsSnapshot {
        status: status(),
        processes: Vec::new(),
        stacks: Vec::new(),
        faults: Vec::new(),
        identities: HashMap::new(),
        own: None,
    })
    .expect("ok");
    assert!(text.contains("leakprobe_uptime_seconds 42.0"), "{text}");
    assert!(!text.contains("leakprobe_stack_live_bytes{"), "{text}");
}

#[test]
fn tiers_and_the_budget_are_exported() {
    use crate::protocol::{BudgetReport, EscalationReport, FaultProcessReport, GrowthReport, Tier0Status, Tier1Status};
    let escalation = EscalationReport {
        pid: 7,
        comm: "leaker".into(),
        trigger: "auto".into(),
        reason: "grows".into(),
        since_unix_ms: 1,
        until_unix_ms: None,
        mode: "full".into(),
        sample_interval_bytes: None,
        cpu_percent: 0.5,
        calls: 10,
    };
    let mut status = status();
    status.tier0 = Some(Tier0Status {
        enabled: true,
        mappings: true,
        sample_interval_bytes: 262_144,
        processes: 3,
        stacks: 9,
        growing: 1,
    });
    status.tier1 = Some(Tier1Status {
        malloc_probes: "auto".into(),
        max_processes: 8,
        escalated: vec![escalation.clone()],
        ended: Vec::new(),
    });
    status.budget = Some(BudgetReport {
        process_percent: 1.0,
        host_percent: 2.0,
        bpf_stats: true,
        uprobes_percent: 0.5,
        tracepoints_percent: 0.25,
        daemon_percent: 1.0,
        trap_ns: 600.0,
        programs: Vec::new(),
        actions: Vec::new(),
    });
    let fault = FaultProcessReport {
        pid: 7,
        comm: "leaker".into(),
        fault_bytes: 8192,
        sampled_faults: 2,
        rss_anon_bytes: Some(4096),
        swap_bytes: Some(0),
        anon_growth: GrowthReport { rate_bytes_per_second: 64.0, ..GrowthReport::default() },
        mapped_bytes: 1 << 20,
        sampled_maps: 1,
        vm_data_bytes: Some(2 << 20),
        data_growth: GrowthReport::default(),
        growing: true,
        tier1: Some(escalation),
        stacks: Vec::new(),
        map_stacks: Vec::new(),
    };
    let text = encode_snapshot(&MetricsSnapshot {
        status,
        processes: Vec::new(),
        stacks: Vec::new(),
        faults: vec![fault],
        identities: HashMap::from([(
            7,
            ProcessIdentity { unit: Some("web.service".into()), ..ProcessIdentity::default() },
        )]),
        own: None,
    })
    .expect("encodes");
    for line in [
        "leakprobe_tier0_processes 3.0",
        "leakprobe_tier0_growing_processes 1.0",
        "leakprobe_tier1_escalated_processes 1.0",
        "leakprobe_cpu_uprobes_ratio 0.005",
        "leakprobe_cpu_budget_host_ratio 0.02",
        r#"leakprobe_process_faulted_bytes{pid="7",comm="leaker",service="web",container_id=""} 8192.0"#,
        r#"leakprobe_process_mapped_bytes{pid="7",comm="leaker",service="web",container_id=""} 1048576.0"#,
        r#"leakprobe_process_vm_data_bytes{pid="7",comm="leaker",service="web",container_id=""} 2097152.0"#,
        r#"leakprobe_process_anon_growth_bytes_per_second{pid="7",comm="leaker",service="web",container_id=""} 64.0"#,
        r#"leakprobe_process_anon_growing{pid="7",comm="leaker",service="web",container_id=""} 1.0"#,
        r#"leakprobe_process_tier1{pid="7",comm="leaker",service="web",container_id=""} 1.0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}
