//! A process in a systemd unit's cgroup, for the `service` label. Where systemd runs as PID 1, `systemd-run
//! --unit=NAME` would do; this machine's PID 1 is not systemd (its hierarchy is mounted, no manager runs), so the
//! test makes the cgroup systemd makes for a service unit, `<slice>/<NAME>.service`, in the hierarchy systemd
//! manages (`name=systemd` on a v1 or hybrid host, else the unified one) and removes it on drop.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{Fixture, LEAKER, POLL_INTERVAL};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unit's cgroup `/leakprobe-test-<pid>.slice/<name>.service`: the unit's directory, then the slice's.
pub struct UnitCgroup {
    dirs: Vec<PathBuf>,
    name: String,
}

impl UnitCgroup {
    /// Makes the cgroup of a service unit named `<prefix>-<pid>-<n>` (unique to this test process and call).
    pub fn new(prefix: &str) -> Self {
        let v1 = PathBuf::from("/sys/fs/cgroup/systemd");
        let root = if v1.join("cgroup.procs").exists() { v1 } else { PathBuf::from("/sys/fs/cgroup") };
        let name = format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let slice = root.join(format!("leakprobe-test-{}.slice", std::process::id()));
        let unit = slice.join(format!("{name}.service"));
        fs::create_dir_all(&unit).unwrap_or_else(|e| panic!("create the cgroup {}: {e}", unit.display()));
        Self { dirs: vec![unit, slice], name }
    }

    /// The unit's name without `.service`: what the `service` label should say.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the C leaker in `mode` in the unit.
    pub fn leaker(&self, mode: &str) -> Fixture {
        self.spawn(LEAKER, mode)
    }

    /// Runs `program mode` in the unit: the shell joins the cgroup, then executes the program, so its first
    /// allocation is already the unit's.
    pub fn spawn(&self, program: &str, mode: &str) -> Fixture {
        let procs = self.dirs[0].join("cgroup.procs");
        let script = format!("echo $$ > '{}' && exec '{program}' '{mode}'", procs.display());
        Fixture::spawn("/bin/sh", &["-c", &script])
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        // The slice may hold another test's unit still: only the unit must go; the slice goes with the last one.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(err) = fs::remove_dir(&self.dirs[0]) {
            if Instant::now() >= deadline {
                eprintln!("could not remove the test cgroup {}: {err}", self.dirs[0].display());
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = fs::remove_dir(&self.dirs[1]);
    }
}
