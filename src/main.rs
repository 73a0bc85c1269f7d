//! The `jitid` binary: parses the command line, sets up logging and the
//! async runtime, runs the command (see [`cli`]) and exits with its code
//! (the exit codes are listed in `cli/exit.rs`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_tracing(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("jitid: error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(cli::run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            // A verdict (`verify`'s REVOKED) was printed as output already.
            if !cli::exit::is_verdict(&error) {
                eprintln!("jitid: error: {}", cli::exit::message(&error));
            }
            ExitCode::from(cli::exit::exit_code(&error))
        }
    };
    if cli::stdout_failed() {
        return ExitCode::FAILURE;
    }
    code
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
