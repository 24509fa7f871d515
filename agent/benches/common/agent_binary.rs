//! Which `plexus` binary the benches run, and how they stop it (shared by the `proxy` and
//! `http` benches).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a stopped process may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The `plexus` binary to run: `PLEXUS_BENCH_BINARY` when set (another build of the agent,
/// such as the profile-guided one of `deploy/pgo-build.sh`, or an instrumented one that
/// records a profile), else the one cargo built with the bench.
pub fn plexus_binary() -> PathBuf {
    chosen_binary().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plexus")))
}

/// Whether `PLEXUS_BENCH_BINARY` chose the binary (the report then names it).
pub fn chosen_binary() -> Option<PathBuf> {
    std::env::var_os("PLEXUS_BENCH_BINARY").map(PathBuf::from)
}

/// Stops `child` as a service manager would: SIGTERM, so that it exits as in service (an
/// instrumented agent writes its profile at exit), then SIGKILL when it has not exited within
/// [`STOP_GRACE`].
pub fn stop(child: &mut Child) {
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let deadline = Instant::now() + STOP_GRACE;
    while terminated && Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
