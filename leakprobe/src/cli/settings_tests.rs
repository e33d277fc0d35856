use std::{ffi::OsString, io::Write as _, sync::Mutex};

use super::{env_var, is_setting, with_file};
use crate::{
    cli::{Cli, Command},
    config::FileConfig,
    daemon::DaemonConfig,
};

/// The environment is the process's: tests that set it, or parse `run` (which reads it), take turns.
static ENV: Mutex<()> = Mutex::new(());

fn daemon_config(args: &[&str]) -> DaemonConfig {
    let args = std::iter::once("leakprobe").chain(args.iter().copied()).map(OsString::from);
    let cli = Cli::parse_layered(args).expect("parses");
    let Command::Run(run) = cli.command else { panic!("not run") };
    crate::cli::run::config(*run).expect("a valid configuration")
}

fn set_env(pairs: &[(&str, Option<&str>)]) {
    for (name, value) in pairs {
        // SAFETY: every test of this module that reads or writes the environment holds `ENV`, and nothing else
        // in these tests reads these variables; nextest runs each test in a process of its own.
        unsafe {
            match value {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}

#[test]
fn every_setting_has_a_variable_and_a_file_key() {
    let definition = Cli::definition();
    let run = definition.find_subcommand("run").expect("run");
    let mut settings = 0;
    let mut file = FileConfig::default();
    for arg in run.get_arguments().filter(|arg| is_setting(arg.get_id().as_str())) {
        let id = arg.get_id().as_str();
        settings += 1;
        let env = arg.get_env().map(|var| var.to_string_lossy().into_owned());
        assert_eq!(env, Some(env_var(id)), "--{id}: its environment variable");
        assert!(id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "key {id}");
        let value = arg.get_default_values().first().map(|v| v.to_string_lossy().into_owned());
        let value = value.unwrap_or_else(|| match id {
            "socket_group" => "0".into(),
            "pid" => "1".into(),
            "libc" | "discovery_exclude" | "pyroscope_basic_auth_file" | "pyroscope_token_file" => "/x".into(),
            "pyroscope_url" => "http://127.0.0.1:4040".into(),
            "escalate_only" => "leak".into(),
            "no_discovery" | "no_log_oom" | "no_metrics" | "no_pprof_endpoint" | "java_perfmap"
            | "no_python_frames" => "true".into(),
            _ => panic!("--{id} has no default: give the test a value for it"),
        });
        file.settings.insert(id.to_owned(), vec![value]);
    }
    assert!(settings >= 35, "only {settings} settings");
    // A file giving every key its default (or a valid value) is accepted.
    with_file(run.clone(), &file).expect("every key is known and every default parses");
}

#[test]
fn a_file_with_an_unknown_key_or_a_bad_value_says_which() {
    let definition = Cli::definition();
    let run = definition.find_subcommand("run").expect("run");
    let bad = |text: &str| {
        let file = FileConfig::parse(text).expect("TOML");
        format!("{:#}", with_file(run.clone(), &file).expect_err(text))
    };
    let err = bad("intervall = \"2s\"");
    assert!(err.contains("intervall") && err.contains("max_series"), "{err}");
    assert!(bad("interval = \"soon\"").contains("interval = \"soon\""));
    assert!(bad("max_series = -1").contains("max_series"));
    assert!(bad("no_discovery = \"maybe\"").contains("true or false"));
    assert!(bad("max_series = [1, 2]").contains("one value"));
    assert!(bad("config = \"/etc/x.toml\"").contains("unknown key `config`"));
}

#[test]
fn precedence_is_flag_then_environment_then_file_then_default() {
    let _env = ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(
        file,
        "max_series = 30\ninterval = \"2s\"\nwindow = \"1m\"\nmax_oom_report_bytes = \"1MiB\"\nno_discovery = true\n\
         sample_interval = 65536\n[verdict]\nmin_points = 4"
    )
    .expect("write");
    let path = file.path().to_str().expect("utf-8 path").to_owned();
    set_env(&[("LEAKPROBE_MAX_SERIES", Some("40")), ("LEAKPROBE_INTERVAL", Some("3s"))]);

    let config = daemon_config(&["run", "--config", &path, "--max-series", "50"]);
    assert_eq!(config.limits.max_series, 50, "the flag wins");
    assert!((config.analysis.interval_s - 3.0).abs() < 1e-9, "the environment wins over the file");
    assert!((config.analysis.window_s - 60.0).abs() < 1e-9, "the file wins over the default");
    assert_eq!(config.limits.max_stacks, 65_536, "the default where nothing else says");
    assert!(config.probes.discovery.is_none(), "a flag set by the file");
    assert_eq!(config.oom_limits.max_bytes, 1 << 20, "a size with units from the file");
    assert_eq!(config.probes.sample_interval, 65_536, "a size as a plain number of bytes");
    assert_eq!(config.analysis.verdict.min_points, 4, "[verdict] from the file");

    assert_eq!(daemon_config(&["run", "--config", &path]).limits.max_series, 40, "the environment");
    set_env(&[("LEAKPROBE_MAX_SERIES", None), ("LEAKPROBE_INTERVAL", None)]);
    let config = daemon_config(&["run", "--config", &path]);
    assert_eq!(config.limits.max_series, 30, "the file");
    assert!((config.analysis.interval_s - 2.0).abs() < 1e-9, "the file");
    let config = daemon_config(&["run"]);
    assert_eq!(config.limits.max_series, 20_000, "the default");
    assert_eq!(config.oom_limits.max_bytes, 64 << 20, "the default size");
    assert!(config.probes.discovery.is_some());
    assert_eq!(daemon_config(&["run", "--max-oom-report-bytes", "2MiB"]).oom_limits.max_bytes, 2 << 20);
    assert_eq!(daemon_config(&["run", "--max-oom-report-bytes", "4096"]).oom_limits.max_bytes, 4096, "old form");

    set_env(&[("LEAKPROBE_CONFIG", Some(&path))]);
    assert_eq!(daemon_config(&["run"]).limits.max_series, 30, "the file named by LEAKPROBE_CONFIG");
    set_env(&[("LEAKPROBE_CONFIG", None)]);
}
