//! The `manifold` binary: parse the command line, set up logging, run.

use anyhow::Context;
use clap::Parser;
use manifold::config::{Cli, Command};

fn init_logging(format: &str, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --loglevel {level:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.with_ansi(false).init(),
        other => anyhow::bail!("invalid --logformat {other:?}: expected json or text"),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(&args.logformat, &args.loglevel)?;
            let config = args.server_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(manifold::server::run(config))?;
            Ok(())
        }
        Command::CmpServer(args) => {
            init_logging(&args.logformat, &args.loglevel)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(manifold::cmp_server::run(args))?;
            Ok(())
        }
    }
}
