//! The daemon's mount task: keeps every mount the user wants served and releases mounts whose
//! worktree is gone (see [`crate::mount::supervise`]). Mount servers are separate processes; the daemon only
//! reaps the ones it started and reports what it could not repair.

use std::process::Child;
use std::time::Duration;

use super::{DaemonCtx, Task};

#[derive(Default)]
pub struct MountSupervisor {
    children: Vec<Child>,
}

impl Task for MountSupervisor {
    fn name(&self) -> &'static str {
        "mounts"
    }

    /// Short: a mount whose worktree was removed while its server was down is released within
    /// seconds (a live server releases its own at once); a round costs a few `stat`s and one
    /// control-file open per mount.
    fn interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Remounts every mount the user left mounted.
    fn start(&mut self, d: &DaemonCtx) {
        let _ = self.tick(d);
    }

    fn tick(&mut self, d: &DaemonCtx) -> Result<(), String> {
        self.children
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let round = crate::mount::supervise(d.store.root());
        self.children.extend(round.started);
        if round.problems.is_empty() {
            Ok(())
        } else {
            Err(round.problems.join("; "))
        }
    }
}
