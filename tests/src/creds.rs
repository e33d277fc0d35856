//! Running the daemon as an unprivileged user holding only some capabilities, with util-linux `setpriv`.

use std::os::unix::fs::PermissionsExt as _;

use tempfile::TempDir;

/// The uid and gid of `nobody` (Debian): owns no file and no process the tests look at.
pub const NOBODY: u32 = 65534;

/// `setpriv` and its arguments, to put before a command: the command runs as uid and gid `uid` without
/// supplementary groups, with exactly `caps` (setpriv's names: `sys_admin`, `chown`, ...) in its inheritable,
/// ambient and bounding sets (as systemd's `AmbientCapabilities=` and `CapabilityBoundingSet=` would), and is
/// killed with `SIGKILL` when the test dies (changing the uid clears the parent-death signal: `--pdeathsig` sets it again).
pub fn setpriv(uid: u32, caps: &[&str]) -> Vec<String> {
    let list: String = caps.iter().flat_map(|cap| [",+", cap]).collect();
    vec![
        "setpriv".to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
        "--pdeathsig=SIGKILL".to_owned(),
        "--".to_owned(),
    ]
}

/// A temporary directory owned by `uid`, for a daemon running as `uid` (mode 0755: clients of other users reach the
/// socket in it, whose own mode decides who may connect).
pub fn dir_owned_by(uid: u32, prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temp dir");
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).expect("chown the temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
    dir
}
