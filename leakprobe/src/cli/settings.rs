//! One place for every setting of `leakprobe run`: each flag also has a `LEAKPROBE_*` environment variable and a
//! key of the TOML file, named after it (`--max-series`: `LEAKPROBE_MAX_SERIES`, `max_series`). Precedence: the
//! flag, then the environment, then the file, then the built-in default.
//!
//! clap already puts the command line over the environment and the environment over an argument's default;
//! the file's values are made the defaults, so the order follows. Nothing here names a flag: a flag added to
//! `RunArgs` gets its variable and its key by itself.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{ArgMatches, Command};

use crate::config::FileConfig;

/// The arguments of `run` that are not settings: the file itself, and clap's own.
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

/// The environment variable of a setting (the argument's id, `max_series`).
pub fn env_var(id: &str) -> String {
    format!("LEAKPROBE_{}", id.to_uppercase())
}

/// Whether `run`'s argument `id` is a setting (has a variable and a file key).
pub fn is_setting(id: &str) -> bool {
    !NOT_SETTINGS.contains(&id)
}

/// `run` with every setting's environment variable, named at the end of its long help.
pub fn with_env(run: Command) -> Command {
    run.mut_args(|arg| {
        let id = arg.get_id().as_str().to_owned();
        if !is_setting(&id) {
            return arg;
        }
        let var = arg.get_env().map_or_else(|| env_var(&id), |var| var.to_string_lossy().into_owned());
        let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
        arg.env(var.clone()).hide_env(true).long_help(format!("{help}\n\n[config: {id}] [env: {var}]"))
    })
}

/// `run` with the file's settings as its defaults, each checked by the argument's own parser.
pub fn with_file(run: Command, file: &FileConfig) -> Result<Command> {
    for (key, values) in &file.settings {
        let Some(arg) = run.get_arguments().find(|arg| arg.get_id() == key.as_str() && is_setting(key)) else {
            let known: Vec<&str> =
                run.get_arguments().map(|arg| arg.get_id().as_str()).filter(|id| is_setting(id)).collect();
            bail!(
                "unknown key `{key}`; the keys are `verdict` and the settings of `leakprobe run`: {}",
                known.join(", ")
            );
        };
        if values.len() > 1 && !matches!(arg.get_action(), clap::ArgAction::Append) {
            bail!("{key}: one value, not {}", values.len());
        }
        for value in values {
            check_value(arg, value).map_err(|why| anyhow::anyhow!("{key} = {value:?}: {why}"))?;
        }
    }
    Ok(run.mut_args(|arg| match file.settings.get(arg.get_id().as_str()) {
        Some(values) if is_setting(arg.get_id().as_str()) => arg.default_values(values.clone()),
        _ => arg,
    }))
}

/// Parses `value` with the argument's own parser, as if given on the command line.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        return value.parse::<bool>().map(drop).map_err(|_| "expected true or false".into());
    }
    let probe = arg.clone().env(None::<&str>).required(false);
    let flag = format!("--{}={value}", arg.get_long().unwrap_or_else(|| arg.get_id().as_str()));
    Command::new("leakprobe")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([flag])
        .map(drop)
        .map_err(|err| first_line(&err.to_string()).to_owned())
}

fn first_line(text: &str) -> &str {
    let text = text.trim_start_matches("error: ");
    text.lines().next().unwrap_or(text)
}

/// The configuration file `run` was given (`--config` or `LEAKPROBE_CONFIG`), if any.
pub fn config_path(run: &ArgMatches) -> Option<PathBuf> {
    run.get_one::<PathBuf>("config").cloned()
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
