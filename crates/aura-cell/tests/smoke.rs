#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use aura_cell::RunSpec;

#[tokio::test(flavor = "multi_thread")]
async fn root_smoke() {
    let c = common::cells().await;
    let out = c.rt.run(RunSpec::shell("echo hello; id; cat /proc/self/status | grep -E 'NoNewPrivs|Seccomp|CapEff'; hostname; ls /")).await;
    match &out {
        Ok(o) => println!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status,
            o.stdout_text(),
            o.stderr_text()
        ),
        Err(e) => println!("error: {e} / {:?}", std::error::Error::source(e)),
    }
    c.finish().await;
}
