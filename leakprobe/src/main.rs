use std::process::ExitCode;

use leakprobe::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::parse_layered(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("leakprobe: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    if !cli.is_daemon() {
        // A client writing into a closed pipe (`leakprobe top | head`) ends quietly, as Unix tools do. The
        // daemon keeps Rust's default (ignored): a client hanging up must not kill it.
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition for SIGPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
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
