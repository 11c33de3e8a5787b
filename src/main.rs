//! The `ballast` binary: the CLI edge, where errors become one line and an exit code.

mod cli;

// The webhook path allocates per event (JSON trees, SQL rows, spans): glibc's malloc took about a
// quarter of the process's CPU under load, measured with perf; mimalloc's thread-local heaps
// take less (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // reqwest is built without a default TLS provider; install ring once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let command = cli::parse();
    let settings = match ballast::config::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // Outside the async runtime: the OTLP exporter's blocking HTTP client lives on its own
    // thread and must be built and dropped outside any runtime.
    let telemetry = ballast::telemetry::init(&settings, command.runs_a_member());
    // Kept to the end: dropping it sends what is queued.
    let reporter = ballast::error_reports::init(settings.sentry_dsn.as_ref(), &settings.environment);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(cli::run(command, settings));
    drop(runtime);
    drop(reporter);
    // Spans still in the batch are exported before the process ends.
    telemetry.shutdown();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, each said once: most errors already quote their
/// cause ("postgres: connection refused"), so a cause their message holds is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1).map(ToString::to_string) {
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}
