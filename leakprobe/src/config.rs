//! Defaults shared by the daemon and the CLI client.

use leakprobe_common::LIVE_MAX_ENTRIES;

/// Where the daemon serves and the client connects, unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/leakprobe/leakprobe.sock";
/// Mode of the socket file: root and the socket's group may query.
pub const DEFAULT_SOCKET_MODE: &str = "0660";
/// Live allocations tracked: the kernel's live-address map holds as many.
pub const DEFAULT_MAX_ALLOCATIONS: u32 = LIVE_MAX_ENTRIES;
/// Distinct stacks stored.
pub const DEFAULT_MAX_STACKS: u32 = 65_536;
/// Where the daemon keeps what outlives it (OOM reports under `oom/`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/leakprobe";
