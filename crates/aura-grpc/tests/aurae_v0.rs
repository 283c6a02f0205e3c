//! Aurae v0 clients against a real node (needs root, as cells do): the cell lifecycle over
//! the Unix socket with mTLS, logs with history, signals, discovery, health, and bad specs
//! refused with Aurae's status codes and nothing allocated.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use aura_grpc::proto::aurae::cells::v0 as cells;
use aura_grpc::proto::aurae::discovery::v0 as discovery;
use aura_grpc::proto::aurae::observe::v0 as observe;
use aura_grpc::proto::grpc::health::v1 as health;
use cells::cell_service_client::CellServiceClient;
use observe::observe_service_client::ObserveServiceClient;
use tonic::Code;

fn cell(name: &str) -> cells::Cell {
    cells::Cell {
        name: name.into(),
        isolate_process: true,
        isolate_network: true,
        ..Default::default()
    }
}

fn allocate(c: cells::Cell) -> cells::CellServiceAllocateRequest {
    cells::CellServiceAllocateRequest { cell: Some(c) }
}

fn start(cell: &str, name: &str, command: &str) -> cells::CellServiceStartRequest {
    cells::CellServiceStartRequest {
        cell_name: Some(cell.into()),
        executable: Some(cells::Executable {
            name: name.into(),
            command: command.into(),
            description: String::new(),
        }),
        uid: None,
        gid: None,
    }
}

fn names(nodes: &[cells::CellGraphNode]) -> Vec<String> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.cell.as_ref().unwrap().name.clone());
        for c in names(&n.children) {
            out.push(format!("  {c}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn root_aurae_client_allocates_starts_reads_logs_stops_lists_and_frees() {
    let node = common::node().await;
    let channel = node.admin().await;
    let mut cells = CellServiceClient::new(channel.clone());
    let mut observe = ObserveServiceClient::new(channel.clone());

    let mut web = cell("web");
    web.memory = Some(cells::MemoryController {
        max: Some(256 << 20),
        ..Default::default()
    });
    web.cpu = Some(cells::CpuController {
        weight: Some(100),
        max: Some(50_000),
        period: Some(100_000),
    });
    let r = cells.allocate(allocate(web)).await.unwrap().into_inner();
    assert_eq!(r.cell_name, "web");
    cells.allocate(allocate(cell("web/api"))).await.unwrap();

    let started = cells
        .start(start(
            "web/api",
            "greeter",
            "echo one; echo two >&2; exec sleep 60",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(started.pid > 0);

    // Wait until both lines are written, then subscribe: a late subscriber gets them.
    let rt = node.rt.clone();
    common::eventually("the greeter's output", || {
        let rt = rt.clone();
        async move { rt.by_pid(started.pid).unwrap().1.history(0).len() == 2 }
    })
    .await;
    let mut logs = observe
        .get_sub_process_stream(observe::GetSubProcessStreamRequest {
            channel_type: observe::LogChannelType::Unspecified.into(),
            process_id: started.pid,
        })
        .await
        .unwrap()
        .into_inner();
    let mut history = Vec::new();
    for _ in 0..2 {
        let item = logs.message().await.unwrap().unwrap().item.unwrap();
        assert!(item.timestamp > 1_600_000_000, "seconds since the epoch");
        history.push((item.channel, item.line));
    }
    // Two pipes: which line the runtime read first is up to the scheduler.
    history.sort();
    assert_eq!(
        history,
        [
            ("stderr".into(), "two".into()),
            ("stdout".into(), "one".into())
        ]
    );

    // Only stderr, when asked.
    let mut errs = observe
        .get_sub_process_stream(observe::GetSubProcessStreamRequest {
            channel_type: observe::LogChannelType::Stderr.into(),
            process_id: started.pid,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        errs.message().await.unwrap().unwrap().item.unwrap().line,
        "two"
    );

    // The stop shows up on the signal stream of the cell.
    let mut signals = observe
        .get_posix_signals_stream(observe::GetPosixSignalsStreamRequest {
            workload: Some(observe::Workload {
                workload_type: observe::WorkloadType::Cell.into(),
                id: "web/api".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = cells
        .list(cells::CellServiceListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&listed.cells), ["web", "  web/api"]);
    let web = listed.cells[0].cell.as_ref().unwrap();
    assert_eq!(web.memory.as_ref().unwrap().max, Some(256 << 20));
    assert_eq!(web.cpu.as_ref().unwrap().max, Some(50_000));
    assert!(web.isolate_network);

    cells
        .stop(cells::CellServiceStopRequest {
            cell_name: Some("web/api".into()),
            executable_name: "greeter".into(),
        })
        .await
        .unwrap();
    let signal = signals.message().await.unwrap().unwrap().signal.unwrap();
    assert_eq!(
        (signal.signal, signal.process_id),
        (libc::SIGTERM, started.pid)
    );
    // The process is gone, so its output ended and the follow stream with it.
    assert!(logs.message().await.unwrap().is_none());

    // The daemon's own log tells the story so far.
    let mut daemon = observe
        .get_aurae_daemon_log_stream(observe::GetAuraeDaemonLogStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(m) = daemon.message().await.unwrap() {
        let line = m.item.unwrap().line;
        let done = line.contains("stopped executable greeter");
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(lines.iter().any(|l| l.contains("web/api")), "{lines:?}");

    cells
        .free(cells::CellServiceFreeRequest {
            cell_name: "web".into(),
        })
        .await
        .unwrap();
    let listed = cells.list(cells::CellServiceListRequest {}).await.unwrap();
    assert!(listed.into_inner().cells.is_empty());

    // Discovery and health, here over TCP with the same mTLS.
    let tcp = node.admin_tcp().await;
    let found = discovery::discovery_service_client::DiscoveryServiceClient::new(tcp.clone())
        .discover(discovery::DiscoverRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(found.healthy);
    assert_eq!(found.version, env!("CARGO_PKG_VERSION"));
    let mut h = health::health_client::HealthClient::new(tcp);
    for service in ["", "aurae.cells.v0.CellService", "aura.cells.v1.Cells"] {
        let r = h
            .check(health::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status(),
            health::health_check_response::ServingStatus::Serving
        );
    }
    let unknown = h
        .check(health::HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Open streams end at shutdown instead of holding the server up.
    let mut watch = h
        .watch(health::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        health::health_check_response::ServingStatus::Serving
    );
    drop(channel);
    node.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn root_bad_specs_get_aurae_codes_and_allocate_nothing() {
    let node = common::node().await;
    let mut cells = CellServiceClient::new(node.admin().await);
    cells.allocate(allocate(cell("ok"))).await.unwrap();
    cells
        .start(start("ok", "sleeper", "exec sleep 60"))
        .await
        .unwrap();

    let negative_memory = cells::Cell {
        memory: Some(cells::MemoryController {
            max: Some(-1),
            ..Default::default()
        }),
        ..cell("neg")
    };
    let negative_cpu = cells::Cell {
        cpu: Some(cells::CpuController {
            max: Some(-5),
            ..Default::default()
        }),
        ..cell("negcpu")
    };
    let zero_weight = cells::Cell {
        cpu: Some(cells::CpuController {
            weight: Some(0),
            ..Default::default()
        }),
        ..cell("weight")
    };
    for (what, c, code) in [
        ("a space", cell("bad name"), Code::InvalidArgument),
        ("a leading dash", cell("-web"), Code::InvalidArgument),
        ("an empty part", cell("web//api"), Code::InvalidArgument),
        ("too long", cell(&"x".repeat(64)), Code::InvalidArgument),
        ("an empty name", cell(""), Code::InvalidArgument),
        ("negative memory", negative_memory, Code::InvalidArgument),
        ("negative cpu max", negative_cpu, Code::InvalidArgument),
        ("cpu weight 0", zero_weight, Code::InvalidArgument),
        ("an unknown parent", cell("nope/child"), Code::NotFound),
        ("a duplicate", cell("ok"), Code::AlreadyExists),
    ] {
        let e = cells.allocate(allocate(c)).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
    }
    let no_cell = cells::CellServiceAllocateRequest { cell: None };
    assert_eq!(
        cells.allocate(no_cell).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    for (what, req, code) in [
        (
            "a duplicate executable",
            start("ok", "sleeper", "true"),
            Code::AlreadyExists,
        ),
        (
            "an unknown cell",
            start("gone", "x", "true"),
            Code::NotFound,
        ),
        (
            "a bad executable name",
            start("ok", "bad name", "true"),
            Code::InvalidArgument,
        ),
        (
            "no cell name",
            cells::CellServiceStartRequest {
                cell_name: None,
                ..start("ok", "x", "true")
            },
            Code::InvalidArgument,
        ),
    ] {
        let e = cells.start(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
    }
    let e = cells
        .stop(cells::CellServiceStopRequest {
            cell_name: Some("ok".into()),
            executable_name: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = cells
        .free(cells::CellServiceFreeRequest {
            cell_name: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = ObserveServiceClient::new(node.admin().await)
        .get_sub_process_stream(observe::GetSubProcessStreamRequest {
            channel_type: 0,
            process_id: 999_999_999,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Nothing but the one good cell and its one executable.
    let listed = cells
        .list(cells::CellServiceListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&listed.cells), ["ok"]);
    let info = node.rt.list().await;
    assert_eq!(info[0].cell.executables.len(), 1);
    cells
        .free(cells::CellServiceFreeRequest {
            cell_name: "ok".into(),
        })
        .await
        .unwrap();
    assert!(node.rt.leftover_cgroups().is_empty());
    node.finish().await;
}
