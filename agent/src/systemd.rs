//! Telling systemd (or any service manager speaking the `sd_notify` protocol) where the agent
//! stands: `READY=1` once it holds its certificate and has bound its endpoint, `RELOADING=1`
//! around a SIGHUP reload, `STOPPING=1` when it drains, and `WATCHDOG=1` every half
//! `WatchdogSec` while its runtime answers. Without `NOTIFY_SOCKET` every call does nothing, so
//! the same binary runs under systemd, in a container or by hand.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

/// `READY=1` with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with the monotonic time systemd's `Type=notify-reload` asks for).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1` with a status line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Pings the watchdog every half of `WATCHDOG_USEC` until `shutdown`, when systemd set one for
/// this process. The ping comes from a task of the agent's runtime, so a wedged runtime stops
/// it and systemd restarts the agent.
pub async fn watchdog(mut shutdown: watch::Receiver<bool>) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (timeout / 2).max(Duration::from_millis(10));
    tracing::info!(?timeout, "systemd watchdog enabled");
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => send(&[NotifyState::Watchdog]),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager");
    }
}
