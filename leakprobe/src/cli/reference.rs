//! `docs/cli.md`, generated from the clap definitions: every subcommand and flag, with its default, its values,
//! and for `run` its configuration key and environment variable. Built only for the test that keeps the
//! checked-in file current; `cargo xtask docs` runs that test with `LEAKPROBE_WRITE_DOCS=1` to rewrite it.

use std::fmt::Write as _;

use clap::{Arg, ArgAction, Command};

use super::{Cli, settings};

/// Where the reference lives, from the crate's directory.
const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");

/// The whole reference.
pub fn markdown() -> String {
    let mut cli = Cli::definition();
    cli.build();
    let mut out = String::from(
        "# CLI reference\n\n<!-- Generated from the clap definitions in leakprobe/src/cli/ by `cargo xtask docs`; \
         do not edit. The test cli_reference_is_current fails when this file is stale. -->\n\n",
    );
    let _ = writeln!(
        out,
        "Every setting of `leakprobe run` can also be given as a `LEAKPROBE_*` environment variable or as a key of \
         the `--config` TOML file. Precedence: flag, then environment, then file, then the built-in default (see \
         [configuration](configuration.md)). Client commands read `LEAKPROBE_SOCKET`.\n"
    );
    // `run` first, then the clients in their order of declaration.
    let mut commands: Vec<&Command> =
        cli.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help").collect();
    commands.sort_by_key(|c| c.get_name() != "run");
    for command in &commands {
        let _ = writeln!(out, "- [`leakprobe {0}`](#leakprobe-{0})", command.get_name());
    }
    for command in commands {
        subcommand(&mut out, command);
    }
    out
}

fn subcommand(out: &mut String, command: &Command) {
    let name = command.get_name();
    let about = command.get_long_about().or(command.get_about()).map(ToString::to_string).unwrap_or_default();
    let usage = command.clone().render_usage().to_string();
    let _ = write!(out, "\n## leakprobe {name}\n\n{about}\n\n```\n{usage}\n```\n");
    let args: Vec<&Arg> =
        command.get_arguments().filter(|arg| !arg.is_hide_set() && arg.get_long() != Some("help")).collect();
    let mut headings: Vec<Option<&str>> = Vec::new();
    for arg in &args {
        if !headings.contains(&arg.get_help_heading()) {
            headings.push(arg.get_help_heading());
        }
    }
    for heading in headings {
        let _ = write!(out, "\n### {}\n\n", heading.unwrap_or("Options"));
        for arg in args.iter().filter(|arg| arg.get_help_heading() == heading) {
            flag(out, arg, name == "run");
        }
    }
}

fn flag(out: &mut String, arg: &Arg, run: bool) {
    let id = arg.get_id().as_str();
    let mut names = String::new();
    if let Some(short) = arg.get_short() {
        let _ = write!(names, "-{short}, ");
    }
    let _ = write!(names, "--{}", arg.get_long().unwrap_or(id));
    if !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        let value =
            arg.get_value_names().and_then(|v| v.first()).map_or_else(|| id.to_uppercase(), ToString::to_string);
        let _ = write!(names, " <{value}>");
    }
    let mut facts = Vec::new();
    let defaults: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    if !defaults.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
        facts.push(format!("default `{}`", defaults.join(",")));
    }
    let values: Vec<String> = arg.get_possible_values().iter().map(|v| format!("`{}`", v.get_name())).collect();
    if !values.is_empty() {
        facts.push(format!("values {}", values.join(", ")));
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        facts.push("repeatable".into());
    }
    if run && settings::is_setting(id) {
        facts.push(format!("config key `{id}`"));
    }
    if let Some(env) = arg.get_env() {
        facts.push(format!("env `{}`", env.to_string_lossy()));
    }
    let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
    let help = help.split("\n\n[config: ").next().unwrap_or_default();
    // A flag's first paragraph is its `-h` summary; the last one its whole text.
    let help = help.split("\n\n").last().unwrap_or_default().replace('\n', " ");
    let facts = if facts.is_empty() { String::new() } else { format!(" *{}.*", capitalized(&facts.join("; "))) };
    let _ = writeln!(out, "- **`{names}`**: {}{facts}", help.trim_end_matches('.').to_owned() + ".");
    for value in arg.get_possible_values().iter().filter(|v| v.get_help().is_some()) {
        let _ = writeln!(
            out,
            "  - `{}`: {}",
            value.get_name(),
            value.get_help().map(ToString::to_string).unwrap_or_default()
        );
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[test]
fn cli_reference_is_current() {
    let expected = markdown();
    if std::env::var_os("LEAKPROBE_WRITE_DOCS").is_some() {
        std::fs::write(PATH, &expected).unwrap_or_else(|e| panic!("writing {PATH}: {e}"));
        return;
    }
    let current = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(current == expected, "docs/cli.md is stale: run `cargo xtask docs` and commit docs/cli.md");
}
