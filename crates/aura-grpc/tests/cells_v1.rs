//! Aura's own cell API, `aura.cells.v1.Cells` (needs root): exit statuses, waiting, logs
//! with history by name, argv and environment, and resource usage from the cgroup.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use aura_grpc::proto::aura::cells::v1 as pb;
use pb::cells_client::CellsClient;
use tonic::Code;

fn exe(name: &str, command: pb::executable_spec::Command) -> pb::ExecutableSpec {
    pb::ExecutableSpec {
        name: name.into(),
        command: Some(command),
        ..Default::default()
    }
}

fn shell(line: &str) -> pb::executable_spec::Command {
    pb::executable_spec::Command::Shell(line.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn root_aura_cells_report_exits_usage_and_logs() {
    let node = common::node().await;
    let mut cells = CellsClient::new(node.admin().await);
    let spec = pb::CellSpec {
        name: "job".into(),
        limits: Some(pb::Limits {
            memory_max: Some(128 << 20),
            pids_max: Some(64),
            ..Default::default()
        }),
        env: vec!["GREETING=hello".into()],
        ..Default::default()
    };
    cells
        .allocate(pb::AllocateRequest { spec: Some(spec) })
        .await
        .unwrap();

    let mut spec = exe(
        "work",
        shell(
            "echo \"$GREETING $WHO\"; echo warn >&2; head -c 20000000 /dev/zero | md5sum >/dev/null; exit 3",
        ),
    );
    spec.env = vec!["WHO=world".into()];
    spec.description = "a short job".into();
    cells
        .start(pb::StartRequest {
            cell: "job".into(),
            executable: Some(spec),
        })
        .await
        .unwrap();
    let waited = cells
        .wait(pb::WaitRequest {
            cell: "job".into(),
            executable: "work".into(),
            timeout_ms: Some(30_000),
        })
        .await
        .unwrap()
        .into_inner();
    let info = waited.exited.unwrap();
    assert!(!info.running);
    let exit = info.exit.unwrap();
    assert_eq!(exit.kind, Some(pb::exit_status::Kind::Code(3)));
    assert!(!exit.oom_killed);
    assert!(info.exited_at_ns.unwrap() >= info.started_at_ns);
    assert_eq!(info.description, "a short job");
    assert!(info.usage.unwrap().memory_peak_bytes.unwrap() > 0);

    // Logs after the fact: the whole history, in order, with channels.
    let mut logs = cells
        .logs(pb::LogsRequest {
            cell: "job".into(),
            executable: "work".into(),
            follow: true,
            channel: pb::Channel::Unspecified.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(l) = logs.message().await.unwrap() {
        lines.push((l.channel(), l.line, l.seq));
    }
    // Sequence numbers count lines as the runtime read them from two pipes, so which
    // stream's line came first is up to the scheduler.
    let seqs: Vec<u64> = lines.iter().map(|l| l.2).collect();
    assert_eq!(seqs, [1, 2]);
    lines.sort();
    assert_eq!(
        lines,
        [
            (pb::Channel::Stdout, "hello world".to_owned(), lines[0].2),
            (pb::Channel::Stderr, "warn".to_owned(), lines[1].2)
        ]
    );

    // A long-running one: wait times out, stop reports the signal.
    cells
        .start(pb::StartRequest {
            cell: "job".into(),
            executable: Some(exe(
                "sleeper",
                pb::executable_spec::Command::Argv(pb::Argv {
                    args: vec!["sleep".into(), "60".into()],
                }),
            )),
        })
        .await
        .unwrap();
    let waited = cells
        .wait(pb::WaitRequest {
            cell: "job".into(),
            executable: "sleeper".into(),
            timeout_ms: Some(100),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(waited.exited.is_none());
    let stopped = cells
        .stop(pb::StopRequest {
            cell: "job".into(),
            executable: "sleeper".into(),
            grace_ms: Some(2_000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stopped.exit.unwrap().kind,
        Some(pb::exit_status::Kind::Signal(libc::SIGTERM))
    );
    assert_eq!(stopped.argv, ["sleep", "60"]);

    // Inspect: the cell's spec and its cgroup's usage.
    let info = cells
        .inspect(pb::InspectRequest { name: "job".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.executables.len(), 2);
    let spec = info.spec.unwrap();
    assert_eq!(spec.limits.unwrap().memory_max, Some(128 << 20));
    assert_eq!(spec.env, ["GREETING=hello"]);
    let usage = info.usage.unwrap();
    assert!(usage.cpu_time_us > 0, "{usage:?}");

    let listed = cells.list(pb::ListRequest {}).await.unwrap().into_inner();
    assert_eq!(listed.cells.len(), 1);

    // Bad requests. Names are unique among running executables (an exited one's name
    // may be reused), so the duplicate is of one still running.
    cells
        .start(pb::StartRequest {
            cell: "job".into(),
            executable: Some(exe("live", shell("exec sleep 60"))),
        })
        .await
        .unwrap();
    for (what, req, code) in [
        (
            "no command",
            pb::StartRequest {
                cell: "job".into(),
                executable: Some(pb::ExecutableSpec {
                    name: "x".into(),
                    ..Default::default()
                }),
            },
            Code::InvalidArgument,
        ),
        (
            "a bad env entry",
            pb::StartRequest {
                cell: "job".into(),
                executable: Some(pb::ExecutableSpec {
                    env: vec!["NOEQUALS".into()],
                    ..exe("y", shell("true"))
                }),
            },
            Code::InvalidArgument,
        ),
        (
            "a duplicate",
            pb::StartRequest {
                cell: "job".into(),
                executable: Some(exe("live", shell("true"))),
            },
            Code::AlreadyExists,
        ),
    ] {
        let e = cells.start(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
    }
    let negative = pb::CellSpec {
        name: "neg".into(),
        limits: Some(pb::Limits {
            pids_max: Some(-1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = cells
        .allocate(pb::AllocateRequest {
            spec: Some(negative),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = cells
        .logs(pb::LogsRequest {
            cell: "job".into(),
            executable: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    cells
        .free(pb::FreeRequest { name: "job".into() })
        .await
        .unwrap();
    node.finish().await;
}

/// A subscriber that joins late gets the history, then the lines written after it joined,
/// on both Aura's `Logs` and Aurae's `GetSubProcessStream`.
#[tokio::test(flavor = "multi_thread")]
async fn root_logs_send_history_then_follow_live_lines() {
    use aura_grpc::proto::aurae::observe::v0 as observe;

    let node = common::node().await;
    let channel = node.admin().await;
    let mut cells = CellsClient::new(channel.clone());
    let mut observe = observe::observe_service_client::ObserveServiceClient::new(channel);
    // One of the node's workspaces, by name: made for the cell, under the node's root.
    let workspace = node.dir.path().join("workspaces/default/ws");
    cells
        .allocate(pb::AllocateRequest {
            spec: Some(pb::CellSpec {
                name: "talker".into(),
                workspace: Some("ws".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // The second line waits for a file the test makes after subscribing.
    let started = cells
        .start(pb::StartRequest {
            cell: "talker".into(),
            executable: Some(exe(
                "t",
                shell("echo before; while [ ! -e /workspace/go ]; do sleep 0.02; done; echo after; exec sleep 60"),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let mut aura = cells
        .logs(pb::LogsRequest {
            cell: "talker".into(),
            executable: "t".into(),
            follow: true,
            channel: pb::Channel::Stdout.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aura.message().await.unwrap().unwrap().line, "before");
    let mut aurae = observe
        .get_sub_process_stream(observe::GetSubProcessStreamRequest {
            channel_type: observe::LogChannelType::Stdout.into(),
            process_id: started.pid,
        })
        .await
        .unwrap()
        .into_inner();
    let first = aurae.message().await.unwrap().unwrap().item.unwrap();
    assert_eq!(first.line, "before");

    std::fs::write(workspace.join("go"), "").unwrap();
    assert_eq!(aura.message().await.unwrap().unwrap().line, "after");
    let second = aurae.message().await.unwrap().unwrap().item.unwrap();
    assert_eq!(second.line, "after");

    cells
        .free(pb::FreeRequest {
            name: "talker".into(),
        })
        .await
        .unwrap();
    // The executable is gone, so both follows end.
    assert!(aura.message().await.unwrap().is_none());
    assert!(aurae.message().await.unwrap().is_none());
    node.finish().await;
}

/// Over gRPC an `admin` certificate is the local operator's power, but the workspace was
/// any host path and binds any host path, so the node's home (its keys, its database)
/// could be mounted into a cell. Now a workspace is one of the node's (`NAME` or
/// `NAMESPACE/NAME`) or a path from the allowlist, binds come from the allowlist, and the
/// node's home is never mountable.
#[tokio::test(flavor = "multi_thread")]
async fn root_an_admin_cannot_mount_the_node_home_or_paths_outside_the_allowlist() {
    let node = common::node().await;
    let mut cells = CellsClient::new(node.admin().await);
    let home = node.dir.path().to_string_lossy().into_owned();
    let host = node.host.path().to_owned();
    let bind = |source: &str| pb::Bind {
        source: source.into(),
        target: "/data".into(),
        writable: false,
    };
    let keys = format!("{home}/pki");
    let elsewhere = host.join("elsewhere").to_string_lossy().into_owned();
    let refused = [
        ("the home as workspace", Some(home.clone()), vec![]),
        ("the keys as workspace", Some(keys.clone()), vec![]),
        (
            "a path outside the allowlist",
            Some(elsewhere.clone()),
            vec![],
        ),
        ("a relative path", Some("../pki".to_owned()), vec![]),
        ("the home as a bind", None, vec![bind(&home)]),
        ("the keys as a bind", None, vec![bind(&keys)]),
        ("/ as a bind", None, vec![bind("/")]),
        ("a bind outside the allowlist", None, vec![bind(&elsewhere)]),
    ];
    for (what, workspace, binds) in refused {
        let err = cells
            .allocate(pb::AllocateRequest {
                spec: Some(pb::CellSpec {
                    name: "thief".into(),
                    workspace,
                    binds,
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::InvalidArgument),
            "{what}: {err:?}"
        );
    }
    assert!(node.rt.list().await.is_empty());

    // What is allowed: a node workspace by name, in a namespace, and an allowlisted bind.
    let allowed = host.join("allowed").to_string_lossy().into_owned();
    // A host directory as a workspace must also belong to the cells (or to an
    // unprivileged user), never to root.
    let mine = host.join("allowed/mine");
    std::fs::create_dir(&mine).unwrap();
    let base = node.rt.options().id_base;
    std::os::unix::fs::chown(&mine, Some(base), Some(base)).unwrap();
    let mine = mine.to_string_lossy().into_owned();
    for (name, workspace) in [
        ("ws-default", "build"),
        ("ws-team", "team-a/build"),
        ("ws-host", mine.as_str()),
    ] {
        cells
            .allocate(pb::AllocateRequest {
                spec: Some(pb::CellSpec {
                    name: name.into(),
                    workspace: Some(workspace.into()),
                    binds: vec![bind(&allowed)],
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    for ws in ["default/build", "team-a/build"] {
        assert!(node.dir.path().join("workspaces").join(ws).is_dir(), "{ws}");
    }
    for name in ["ws-default", "ws-team", "ws-host"] {
        cells
            .free(pb::FreeRequest { name: name.into() })
            .await
            .unwrap();
    }
    node.finish().await;
}
