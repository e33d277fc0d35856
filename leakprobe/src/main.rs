use std::process::ExitCode;

use clap::Parser as _;
use leakprobe::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.default_log_level())).init();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the cause chain joined by ": ".
            eprintln!("leakprobe: {err:#}");
            ExitCode::FAILURE
        }
    }
}
