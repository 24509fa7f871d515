//! The operator's dashboard (`/ui` on the admin address), rendered by headless Chromium
//! (Debian's `chromium` package; `.ci/run` installs it): its script fills every panel from the
//! agent's own API, with no external asset.

use std::process::Command;
use std::time::Duration;

use plexus_tests::http::{Backend, Client};
use plexus_tests::*;

use crate::PATIENCE;

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("headless Chromium is installed (apt-get install chromium)");
    Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1100",
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_members_routes_and_certificates_in_a_browser() {
    let mesh = Mesh::new();
    let backend = Backend::start("b").await;
    let b = mesh
        .agent(
            &mesh.node("node-b"),
            &format!(
                "[[service]]\nname = \"api\"\naddress = \"{}\"\nprotocol = \"http\"\n",
                backend.addr
            ),
        )
        .await;
    let top = format!(
        "listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nseeds = [\"{}\"]\n",
        b.quic_addr
    );
    let extra = "[gossip]\ninterval = \"100ms\"\n\
                 [[upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:0\"\nprotocol = \"http\"\n";
    let a = start(&mesh.config("node-a", &mesh.node("node-a"), &top, extra)).await;
    let app = a.upstream_addr("api").unwrap();
    let served = eventually(PATIENCE, async || {
        let mut client = Client::h1(app).await;
        client.get("/").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(served);

    let (code, page) = admin_get(a.admin_addr, "/ui").await;
    assert_eq!(code, 200);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );

    let url = format!("http://{}/ui", a.admin_addr);
    let admin = a.admin_addr;
    let dom = tokio::task::spawn_blocking(move || chromium(&["--dump-dom"], &url))
        .await
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the script never loaded the API:\n{dom}"
    );
    for wanted in [
        "node-a <span class=\"muted\">(this agent)</span>",
        "node-b",
        "spiffe://test.plexus/node/node-a",
        "no node is quarantined",
        ">healthy<",
    ] {
        assert!(
            dom.contains(wanted),
            "no {wanted:?} in the rendered page:\n{dom}"
        );
    }

    // A screenshot a person can look at: a real picture, not an empty page.
    let shot = mesh.path().join("dashboard.png");
    let arg = format!("--screenshot={}", shot.display());
    let url = format!("http://{admin}/ui");
    let out = tokio::task::spawn_blocking(move || chromium(&[&arg], &url))
        .await
        .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&png[1..4], b"PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 1100));
    assert!(
        png.len() > 20_000,
        "a {} byte screenshot is a blank page",
        png.len()
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
