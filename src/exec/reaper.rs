//! The server as child subreaper: descendants orphaned by a killed process
//! group (or by a tool that double-forks) are re-parented to this process
//! instead of to init, and reaped here so they never linger as zombies.
//!
//! Being a subreaper and having children are properties of the process,
//! not of one server value, so this is the one piece of process-wide state
//! in manifold: a registry of the children the supervisor is waiting for
//! (tokio reaps those), and one reaper thread started on first use.
//!
//! What gets reaped: a zombie child of this process that the supervisor is
//! not waiting for and that is not in this process's own process group.
//! The last rule keeps the reaper away from children that other code in
//! the process spawned without a group of their own (a test harness's
//! `git`, say), whose owners wait for them.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// How often the reaper looks for zombies when nothing woke it.
const POLL: Duration = Duration::from_secs(2);

struct Reaper {
    /// Pids of group leaders the supervisor spawned and still waits for.
    /// Held while spawning and while reaping, so a child that exits before
    /// it is registered is never taken from the code waiting for it.
    managed: Mutex<HashSet<i32>>,
    /// Set by [`wake`]; the reaper thread waits on it.
    wake: Mutex<bool>,
    woken: Condvar,
    /// Whether this process became a subreaper.
    subreaper: bool,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let subreaper = match nix::sys::prctl::set_child_subreaper(true) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(%err, "cannot become child subreaper; orphaned tool processes will be re-parented to init");
                false
            }
        };
        let spawned = std::thread::Builder::new()
            .name("manifold-reaper".to_string())
            .spawn(run);
        if let Err(err) = spawned {
            tracing::warn!(%err, "cannot start the reaper thread");
        }
        Reaper {
            managed: Mutex::new(HashSet::new()),
            wake: Mutex::new(false),
            woken: Condvar::new(),
            subreaper,
        }
    })
}

/// Makes this process a child subreaper and starts the reaper. Idempotent.
/// Returns whether the process is a subreaper.
pub fn start() -> bool {
    reaper().subreaper
}

/// Runs `spawn` (which must start one child in a new process group and
/// return its pid) so that the reaper cannot take the child before it is
/// registered as awaited. The registration ends when the returned guard
/// is dropped, which must happen only after the child is reaped by its
/// owner (or handed to tokio's orphan reaping).
pub fn spawn_managed<T, E>(
    spawn: impl FnOnce() -> Result<(T, Option<u32>), E>,
) -> Result<(T, Managed), E> {
    let reaper = reaper();
    let mut managed = reaper.managed.lock().unwrap_or_else(|e| e.into_inner());
    let (child, pid) = spawn()?;
    let pid = pid.map(|pid| pid as i32);
    if let Some(pid) = pid {
        managed.insert(pid);
    }
    Ok((child, Managed { pid }))
}

/// The registration of one awaited child; see [`spawn_managed`].
pub struct Managed {
    pid: Option<i32>,
}

impl Drop for Managed {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let reaper = reaper();
            reaper
                .managed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pid);
            wake();
        }
    }
}

/// Asks the reaper to look for zombies now (e.g. after a group was killed).
pub fn wake() {
    let reaper = reaper();
    *reaper.wake.lock().unwrap_or_else(|e| e.into_inner()) = true;
    reaper.woken.notify_one();
}

fn run() {
    let reaper = reaper();
    loop {
        {
            let woken = reaper.wake.lock().unwrap_or_else(|e| e.into_inner());
            let (mut woken, _) = reaper
                .woken
                .wait_timeout_while(woken, POLL, |woken| !*woken)
                .unwrap_or_else(|e| e.into_inner());
            *woken = false;
        }
        // Orphans get their SIGKILL with the group but become zombies only
        // once the kernel has torn them down; look twice.
        reap_once(reaper);
        std::thread::sleep(Duration::from_millis(50));
        reap_once(reaper);
    }
}

/// Reaps every zombie child that is neither awaited nor in our own group.
/// Returns how many were reaped.
fn reap_once(reaper: &Reaper) -> usize {
    let managed = reaper.managed.lock().unwrap_or_else(|e| e.into_inner());
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut reaped = 0;
    for pid in children() {
        if managed.contains(&pid) {
            continue;
        }
        let Some(stat) = Stat::read(pid) else {
            continue;
        };
        if stat.state != 'Z' || stat.pgrp == own_group {
            continue;
        }
        if waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        }
    }
    if reaped > 0 {
        tracing::debug!(reaped, "reaped orphaned tool processes");
    }
    reaped
}

/// The pids of this process's children.
fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let mut found_file = false;
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                found_file = true;
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
        if found_file {
            return pids;
        }
    }
    // Kernels without CONFIG_PROC_CHILDREN: scan every process.
    let me = std::process::id() as i32;
    processes_where(|stat| stat.ppid == me)
}

/// Pids of every process (zombies included) whose stat satisfies `keep`.
fn processes_where(keep: impl Fn(&Stat) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| Stat::read(*pid).is_some_and(|stat| keep(&stat)))
        .collect()
}

/// The fields of `/proc/<pid>/stat` the reaper needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

impl Stat {
    pub fn read(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Stat::parse(&text)
    }

    /// Parses a stat line; the command name may itself contain spaces and
    /// parentheses, so fields are taken after the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some(Stat { state, ppid, pgrp })
    }
}

/// Pids of live or zombie processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    processes_where(|stat| stat.pgrp == pgid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_odd_names() {
        assert_eq!(
            Stat::parse("42 (a) b (c)) Z 7 42 42 0 -1"),
            Some(Stat {
                state: 'Z',
                ppid: 7,
                pgrp: 42
            })
        );
        assert_eq!(Stat::parse("garbage"), None);
    }
}
