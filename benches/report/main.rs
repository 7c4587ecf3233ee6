//! The benchmark report: runs every scenario against the real server
//! (the release `manifold` binary, real git, helm and kustomize, fixture
//! repositories generated here) and writes BENCHMARKS.md and its charts.
//!
//! ```sh
//! scripts/install-tools.sh && export PATH=$PWD/.tools/bin:$PATH
//! cargo bench --bench report                 # full run: BENCHMARKS.md + charts in the repo
//! cargo bench --bench report -- --quick      # CI's run: small sizes, into target/bench-quick
//! cargo bench --bench report -- --only cold_render,directory
//! ```
//!
//! Options: `--quick` (small sizes, short windows; under 5 minutes on
//! 2 cores), `--only NAME[,NAME]` (some scenarios), `--out DIR` (where the
//! report goes; the repository root for a full run of everything,
//! `target/bench-quick` or `target/bench-partial` otherwise).
//! Without `--bench` (as `cargo test --all-targets` runs it) it does
//! nothing: CI runs the quick mode on the release build instead.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/support/concurrency_fixture.rs"]
mod concurrency_fixture;

mod harness;
mod svg;

mod cache_hits;
mod cold_render;
mod directory;
mod git_transfer;
mod memory;
mod monorepo;
mod overrides;
mod webhook;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::fixtures;
use harness::{Ctx, Mode, Section};

/// The scenarios, in report order.
const SCENARIOS: [&str; 8] = [
    "cache_hits",
    "cold_render",
    "directory",
    "monorepo",
    "overrides",
    "git_transfer",
    "memory",
    "webhook",
];

async fn run_scenario(name: &str, ctx: &Ctx) -> Section {
    match name {
        "cache_hits" => cache_hits::run(ctx).await,
        "cold_render" => cold_render::run(ctx).await,
        "directory" => directory::run(ctx).await,
        "monorepo" => monorepo::run(ctx).await,
        "overrides" => overrides::run(ctx).await,
        "git_transfer" => git_transfer::run(ctx).await,
        "memory" => memory::run(ctx).await,
        "webhook" => webhook::run(ctx).await,
        other => unreachable!("unknown scenario {other}"),
    }
}

struct Options {
    mode: Mode,
    only: Option<Vec<String>>,
    out: PathBuf,
}

fn options() -> Option<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return None;
    }
    let mut mode = Mode::Full;
    let mut only = None;
    let mut out = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--bench" => {}
            "--quick" => mode = Mode::Quick,
            "--only" => {
                let names: Vec<String> = iter
                    .next()
                    .expect("--only needs scenario names")
                    .split(',')
                    .map(str::to_string)
                    .collect();
                for name in &names {
                    assert!(
                        SCENARIOS.contains(&name.as_str()),
                        "unknown scenario {name:?}; known: {}",
                        SCENARIOS.join(", ")
                    );
                }
                only = Some(names);
            }
            "--out" => out = Some(PathBuf::from(iter.next().expect("--out needs a directory"))),
            // cargo bench passes a filter when given one; a filter names
            // scenarios too.
            name if SCENARIOS.contains(&name) => {
                only.get_or_insert_with(Vec::new).push(name.into())
            }
            other => {
                panic!("unknown argument {other:?}; use --quick, --only NAME[,NAME], --out DIR")
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = out.unwrap_or_else(|| match (mode, &only) {
        (Mode::Full, None) => root.to_path_buf(),
        (Mode::Quick, None) => root.join("target/bench-quick"),
        (_, Some(_)) => root.join("target/bench-partial"),
    });
    Some(Options { mode, only, out })
}

fn main() {
    // The cache-hit scenario's floor server is this binary started again.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__floor") {
        cache_hits::serve_floor(args.get(2).expect("__floor FILE"));
        return;
    }
    let Some(options) = options() else {
        println!("report: run with `cargo bench --bench report [-- --quick]` to measure");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(options));
}

async fn run(options: Options) {
    let ctx = Ctx {
        mode: options.mode,
        ticks: harness::clock_ticks_per_second(),
    };
    let names: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|name| {
            options
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == name))
        })
        .collect();
    let started = Instant::now();
    let date = harness::version_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut sections = Vec::new();
    for name in &names {
        eprintln!("report: {name} ({:?} mode)…", ctx.mode);
        let begun = Instant::now();
        let section = run_scenario(name, &ctx).await;
        eprintln!("report: {name} took {:.1} s", begun.elapsed().as_secs_f64());
        sections.push((name.to_string(), section, begun.elapsed()));
    }
    let total = started.elapsed();
    std::fs::create_dir_all(&options.out).expect("report directory");
    let report = render(&options, &names, &sections, &date, total);
    for (_, section, _) in &sections {
        for (file, text) in &section.charts {
            std::fs::write(options.out.join(file), text).expect("chart written");
        }
    }
    let path = options.out.join("BENCHMARKS.md");
    std::fs::write(&path, report).expect("BENCHMARKS.md written");
    println!(
        "report: {} scenarios in {:.0} s; wrote {}",
        sections.len(),
        total.as_secs_f64(),
        path.display()
    );
}

/// One line of the machine, from a file's `key: value` or `KEY=value`.
fn field_of(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?;
        let value = rest.trim_start().trim_start_matches([':', '=']).trim();
        Some(value.trim_matches('"').to_string())
    })
}

fn machine() -> Vec<(String, String)> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = field_of("/proc/meminfo", "MemTotal")
        .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    let commit = harness::version_of("git", &["-C", manifest_dir, "rev-parse", "--short", "HEAD"]);
    let dirty = std::process::Command::new("git")
        .args([
            "-C",
            manifest_dir,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    vec![
        (
            "CPU".into(),
            format!(
                "{cpus} × {}",
                field_of("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into())
            ),
        ),
        ("Memory".into(), memory),
        (
            "OS".into(),
            format!(
                "{}, Linux {}",
                field_of("/etc/os-release", "PRETTY_NAME").unwrap_or_else(|| "unknown".into()),
                harness::version_of("uname", &["-r"])
            ),
        ),
        (
            "manifold".into(),
            format!(
                "{commit}{} (release build, `cargo bench`)",
                if dirty { " with local changes" } else { "" }
            ),
        ),
        ("rustc".into(), harness::version_of("rustc", &["-V"])),
        ("git".into(), harness::version_of("git", &["--version"])),
        (
            "helm".into(),
            harness::version_of("helm", &["version", "--short"]),
        ),
        (
            "kustomize".into(),
            harness::version_of("kustomize", &["version"]),
        ),
    ]
}

fn render(
    options: &Options,
    names: &[&str],
    sections: &[(String, Section, std::time::Duration)],
    date: &str,
    total: std::time::Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `benches/report` (`cargo bench --bench report{}`) on {date}; do not edit by \
         hand: change the harness and run it again. Every ratio compares two things measured in \
         the same run on the same machine. The server is the release `manifold` binary in a \
         process of its own, with its in-process cache only (no Redis), talking to real git, \
         helm and kustomize; the repositories are generated by the harness and served over \
         `file://`.\n",
        match (options.mode, &options.only) {
            (Mode::Quick, _) => " -- --quick".to_string(),
            (Mode::Full, Some(_)) => format!(" -- --only {}", names.join(",")),
            (Mode::Full, None) => String::new(),
        }
    );
    if options.mode == Mode::Quick {
        let _ = writeln!(
            out,
            "**Quick mode**: small sizes and short windows, to keep the harness working in CI. \
             These numbers are not the report.\n"
        );
    }
    let _ = writeln!(out, "## Reproduce\n");
    let _ = writeln!(
        out,
        "```sh\nscripts/install-tools.sh && export PATH=$PWD/.tools/bin:$PATH\n\
         cargo bench --bench report                # this report ({:.0} s here)\n\
         cargo bench --bench report -- --quick     # CI's quick mode, into target/bench-quick\n\
         cargo bench --bench report -- --only monorepo,webhook\n```\n",
        total.as_secs_f64()
    );
    let _ = writeln!(out, "## Machine\n");
    let rows: Vec<Vec<String>> = machine().into_iter().map(|(k, v)| vec![k, v]).collect();
    out.push_str(&harness::table(&["", ""], &rows));
    out.push('\n');
    let _ = writeln!(out, "## Summary\n");
    let mut rows = Vec::new();
    for (_, section, _) in sections {
        for target in &section.targets {
            rows.push(vec![
                target.scenario.clone(),
                target.measure.clone(),
                target.result.clone(),
                if target.target.is_empty() {
                    "—".into()
                } else {
                    target.target.clone()
                },
                match target.met {
                    Some(true) => "met".into(),
                    Some(false) => "**missed**".into(),
                    None => "—".into(),
                },
            ]);
        }
    }
    out.push_str(&harness::table(
        &["scenario", "measure", "result", "target", ""],
        &rows,
    ));
    out.push('\n');
    for (name, section, took) in sections {
        let _ = writeln!(out, "## {}\n", section.title);
        out.push_str(section.body.trim_end());
        let _ = writeln!(
            out,
            "\n\n<sub>Scenario `{name}`: {:.0} s of this run.</sub>\n",
            took.as_secs_f64()
        );
    }
    let history = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/report/history.md");
    if let Ok(text) = std::fs::read_to_string(history) {
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}
