//! The `manifold` binary: parse the command line, set up logging, run.

use anyhow::Context;
use clap::Parser;
use manifold::config::{Cli, Command};
use manifold::otlp::{OtlpConfig, OtlpGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the log subscriber; with `otlp`, also the OTLP trace layer,
/// whose exporter runs on `runtime` (the guard flushes it on exit).
fn init_logging(
    format: &str,
    level: &str,
    otlp: Option<OtlpConfig>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Option<OtlpGuard>> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --loglevel {level:?}"))?;
    // The level filter applies to the log layer only: traces do not
    // depend on --loglevel.
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        "json" => logs.json().boxed(),
        "text" => logs.with_ansi(false).boxed(),
        other => anyhow::bail!("invalid --logformat {other:?}: expected json or text"),
    };
    let (traces, guard) = match otlp {
        Some(otlp) => {
            let (traces, guard) = manifold::otlp::layer(otlp, runtime);
            (Some(traces), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    Ok(guard)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(manifold::config::argo_cd_compatible_args(
        std::env::args_os(),
    ));
    match cli.command {
        Command::Serve(args) => {
            let otlp = OtlpConfig::from_args(
                &args.otlp_address,
                args.otlp_insecure,
                &args.otlp_headers,
                &args.otlp_attrs,
                &args.otlp_sample_ratio,
            )
            .map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let traces = init_logging(&args.logformat, &args.loglevel, otlp, runtime.handle())?;
            let config = args.server_config()?;
            let served = runtime.block_on(manifold::server::run(config));
            // Send the last spans while the runtime still runs.
            if let Some(traces) = traces {
                traces.shutdown();
            }
            served?;
            Ok(())
        }
        Command::CmpServer(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            init_logging(&args.logformat, &args.loglevel, None, runtime.handle())?;
            runtime.block_on(manifold::cmp_server::run(args))?;
            Ok(())
        }
    }
}
