//! The demo's app traffic: GET requests through the callers' upstream listeners at a fixed
//! rate, counted as answered (2xx) or failed. Bounded: it stops when told or after `limit`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

/// Requests sent and how they ended, shared with the narrator.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

impl Tally {
    pub fn read(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Running load; stops when dropped or [`Load::stop`]ped.
pub struct Load {
    pub tally: Arc<Tally>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// `per_second` requests per second through each of `targets`, for at most `limit`.
    pub fn start(targets: &[SocketAddr], per_second: u32, limit: Duration) -> Self {
        let tally = Arc::new(Tally::default());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        for &target in targets {
            let (client, tally, mut stopped) = (client.clone(), tally.clone(), stopped.clone());
            tasks.spawn(async move {
                let uri: hyper::Uri = format!("http://{target}/").parse().expect("a valid URI");
                let mut ticker = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
                let deadline = tokio::time::Instant::now() + limit;
                let mut inflight = tokio::task::JoinSet::new();
                while tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stopped.wait_for(|s| *s) => break,
                    }
                    while inflight.try_join_next().is_some() {}
                    if inflight.len() >= 64 {
                        continue; // bounded: a stuck mesh does not pile up requests
                    }
                    let (client, tally, uri) = (client.clone(), tally.clone(), uri.clone());
                    inflight.spawn(async move {
                        let answered = tokio::time::timeout(Duration::from_secs(5), async {
                            let response = client.get(uri).await.ok()?;
                            let ok = response.status().is_success();
                            response.into_body().collect().await.ok()?;
                            Some(ok)
                        })
                        .await;
                        let counter = match answered {
                            Ok(Some(true)) => &tally.ok,
                            _ => &tally.failed,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    });
                }
                while inflight.join_next().await.is_some() {}
            });
        }
        Self { tally, stop, tasks }
    }

    /// Stops sending and waits for the requests in flight.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}
