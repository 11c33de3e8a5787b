//! CPU time of the processes a benchmark drives, from /proc (user + system), so a figure such as
//! "CPU per applied webhook" covers Ballast, PostgreSQL and Redis together and can be set beside
//! a peer's on the same machine. PostgreSQL's processes are the postmaster and its children
//! (their CPU while alive, and the postmaster's count of children it reaped, so a backend that
//! exits mid-run still counts); Redis is the `redis-server` serving a given port; a peer is
//! the processes whose command line holds a given text, and their children.

use std::collections::BTreeMap;
use std::time::Duration;

/// /proc reports CPU in clock ticks of USER_HZ, which is 100 on every Linux architecture
/// Ballast runs on (the kernel's own tick rate may differ; /proc does not show it).
const TICK: Duration = Duration::from_millis(10);

/// One process's line of /proc/PID/stat, the fields used.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    ppid: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: children it has waited for.
    reaped: u64,
}

fn stat(pid: u32) -> Option<(String, Stat)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Some((comm, Stat { ppid: u32::try_from(num(1)).unwrap_or(0), own: num(11) + num(12), reaped: num(13) + num(14) }))
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default()
}

/// Every process: pid → (command name, stat).
fn processes() -> BTreeMap<u32, (String, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return BTreeMap::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).filter_map(|pid| Some((pid, stat(pid)?))).collect()
}

/// Which processes make up one measured part.
#[derive(Debug, Clone)]
pub enum Part {
    /// This process.
    Myself,
    /// A process and its children (the postmaster serving the benchmark's database).
    Tree(u32),
    /// The `redis-server` whose title names this port.
    RedisOnPort(u16),
    /// Processes whose command line holds this text, and their children (a peer's server).
    CommandHolding(String),
}

/// CPU used so far by each named part.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, Duration>);

/// What each part used between two snapshots.
pub fn since(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, Duration> {
    after.0.iter().map(|(name, t)| (name.clone(), t.saturating_sub(before.0.get(name).copied().unwrap_or_default()))).collect()
}

/// The CPU each of `parts` has used so far.
pub fn snapshot(parts: &[(String, Part)]) -> Snapshot {
    let all = processes();
    let me = std::process::id();
    let mut out = BTreeMap::new();
    for (name, part) in parts {
        let roots: Vec<u32> = match part {
            Part::Myself => vec![me],
            Part::Tree(pid) => vec![*pid],
            Part::RedisOnPort(port) => {
                all.iter().filter(|(pid, (comm, _))| comm.starts_with("redis-server") && cmdline(**pid).contains(&format!(":{port}"))).map(|(pid, _)| *pid).collect()
            }
            Part::CommandHolding(text) => all.keys().copied().filter(|pid| *pid != me && cmdline(*pid).contains(text.as_str())).collect(),
        };
        let mut ticks = 0u64;
        for root in &roots {
            let Some((_, root_stat)) = all.get(root) else { continue };
            ticks += root_stat.own;
            if !matches!(part, Part::Myself) {
                // Children alive now, and those the root has reaped.
                ticks += root_stat.reaped;
                ticks += all.values().filter(|(_, s)| s.ppid == *root).map(|(_, s)| s.own).sum::<u64>();
            }
        }
        out.insert(name.clone(), TICK * u32::try_from(ticks).unwrap_or(u32::MAX));
    }
    Snapshot(out)
}

/// The parent of `pid` (a PostgreSQL backend's is its postmaster).
pub fn parent_of(pid: u32) -> Option<u32> {
    stat(pid).map(|(_, s)| s.ppid)
}
