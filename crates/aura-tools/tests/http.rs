//! `http.fetch`: the address table, and every refusal path (switched off, host not
//! allowlisted, bad schemes, private and loopback addresses by literal, by name and in
//! IPv6 disguises). None of these reach the network: a listener on loopback checks that
//! no connection ever arrives.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::net::IpAddr;
use std::time::Duration;

use aura_tools::http::{AddressClass, classify};
use aura_tools::{BuiltinOptions, ErrorKind, HttpOptions, Registry, Target};
use serde_json::json;
use support::{World, builtin, call, run};

#[test]
fn the_address_table() {
    use AddressClass::*;
    let check = |ip: &str, expect: AddressClass| {
        let addr: IpAddr = ip.parse().unwrap();
        assert_eq!(classify(addr), expect, "{ip}");
    };
    // IPv4.
    check("0.0.0.0", Unspecified);
    check("0.1.2.3", Reserved);
    check("0.255.255.255", Reserved);
    check("1.1.1.1", Public);
    check("8.8.8.8", Public);
    check("9.255.255.255", Public);
    check("10.0.0.0", Private);
    check("10.255.255.255", Private);
    check("11.0.0.0", Public);
    check("100.63.255.255", Public);
    check("100.64.0.0", SharedCgnat);
    check("100.127.255.255", SharedCgnat);
    check("100.128.0.0", Public);
    check("126.255.255.255", Public);
    check("127.0.0.1", Loopback);
    check("127.255.255.254", Loopback);
    check("128.0.0.0", Public);
    check("169.253.255.255", Public);
    check("169.254.169.254", LinkLocal);
    check("169.255.0.0", Public);
    check("172.15.255.255", Public);
    check("172.16.0.0", Private);
    check("172.31.255.255", Private);
    check("172.32.0.0", Public);
    check("192.0.0.1", Reserved);
    check("192.0.1.1", Public);
    check("192.0.2.1", Documentation);
    check("192.0.3.1", Public);
    check("192.88.99.1", Reserved);
    check("192.167.255.255", Public);
    check("192.168.0.1", Private);
    check("192.168.255.255", Private);
    check("192.169.0.0", Public);
    check("198.17.255.255", Public);
    check("198.18.0.0", Benchmarking);
    check("198.19.255.255", Benchmarking);
    check("198.20.0.0", Public);
    check("198.51.100.7", Documentation);
    check("203.0.113.9", Documentation);
    check("223.255.255.255", Public);
    check("224.0.0.1", Multicast);
    check("239.255.255.255", Multicast);
    check("240.0.0.1", Reserved);
    check("255.255.255.254", Reserved);
    check("255.255.255.255", Broadcast);
    // IPv6.
    check("::", Unspecified);
    check("::1", Loopback);
    check("::2", Reserved);
    check("::ffff:127.0.0.1", Loopback);
    check("::ffff:10.1.2.3", Private);
    check("::ffff:169.254.169.254", LinkLocal);
    check("::ffff:0.0.0.0", Unspecified);
    check("::ffff:8.8.8.8", Public);
    check("::127.0.0.1", Loopback);
    check("::192.168.1.1", Private);
    check("::8.8.8.8", Reserved);
    check("::ffff:0:8.8.8.8", Reserved);
    check("64:ff9b::8.8.8.8", Public);
    check("64:ff9b::127.0.0.1", Loopback);
    check("64:ff9b::a9fe:a9fe", LinkLocal);
    check("64:ff9b:1::1", Reserved);
    check("100::1", Reserved);
    check("2001::1", Reserved);
    check("2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved);
    check("2001:2::1", Benchmarking);
    check("2001:db8::1", Documentation);
    check("2001:4860:4860::8888", Public);
    check("2002:7f00:0001::1", Loopback);
    check("2002:0a00:0001::1", Private);
    check("2002:0808:0808::1", Public);
    check("2606:4700:4700::1111", Public);
    check("3fff::1", Documentation);
    check("3fff:fff::1", Documentation);
    check("3fff:1000::1", Public);
    check("4000::1", Reserved);
    check("5f00::1", Reserved);
    check("fc00::1", Private);
    check("fd12:3456::1", Private);
    check("fe80::1", LinkLocal);
    check("febf::1", LinkLocal);
    check("fec0::1", Private);
    check("ff02::1", Multicast);
    check("ff0e::1", Multicast);
}

/// Every IPv4 /8 boundary and a sweep of the space: the mapped IPv6 form is classified
/// exactly like the IPv4 address, and the two agree with the standard library where it
/// has an opinion.
#[test]
fn mapped_forms_agree_with_ipv4_across_the_space() {
    for a in 0..=255u8 {
        for b in [0u8, 1, 63, 64, 127, 128, 168, 254, 255] {
            for d in [0u8, 1, 255] {
                let v4 = std::net::Ipv4Addr::new(a, b, 7, d);
                let class = classify(IpAddr::V4(v4));
                assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), class, "{v4}");
                if v4.is_loopback() {
                    assert_eq!(class, AddressClass::Loopback, "{v4}");
                }
                if v4.is_private() {
                    assert_eq!(class, AddressClass::Private, "{v4}");
                }
                if v4.is_link_local() {
                    assert_eq!(class, AddressClass::LinkLocal, "{v4}");
                }
                if v4.is_multicast() {
                    assert_eq!(class, AddressClass::Multicast, "{v4}");
                }
                if v4.is_documentation() {
                    assert_eq!(class, AddressClass::Documentation, "{v4}");
                }
            }
        }
    }
}

fn enabled() -> Registry {
    Registry::builtin(BuiltinOptions {
        http: HttpOptions {
            enabled: true,
            ..HttpOptions::default()
        },
        ..BuiltinOptions::default()
    })
}

#[test]
fn the_target_is_the_host() {
    let r = builtin();
    let p = r
        .prepare(&call(
            "http.fetch",
            json!({"url": "https://API.example.com:8443/v1?q=1"}),
        ))
        .unwrap();
    assert_eq!(
        p.target,
        Target::Host {
            host: "api.example.com".into(),
            port: 8443,
            scheme: "https".into()
        }
    );
    assert!(!p.destructive);
    for (url, kind) in [
        ("ftp://example.com/", ErrorKind::Confinement),
        ("gopher://example.com/", ErrorKind::Confinement),
        ("http://user:pass@example.com/", ErrorKind::InvalidArguments),
        ("example.com/x", ErrorKind::InvalidArguments),
        ("http://", ErrorKind::InvalidArguments),
    ] {
        let err = r
            .prepare(&call("http.fetch", json!({"url": url})))
            .unwrap_err();
        assert_eq!(err.kind, kind, "{url}: {err}");
    }
    let err = r
        .prepare(&call(
            "http.fetch",
            json!({"url": "https://example.com/", "method": "POST"}),
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArguments, "{err}");
}

#[tokio::test]
async fn refusals_happen_before_any_connection() {
    let w = World::new();
    // A real listener on loopback: no refused call may reach it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let check = |registry: Registry,
                 hosts: Vec<&str>,
                 url: String,
                 expect: ErrorKind,
                 says: &'static str| {
        let mut ctx = w.ctx();
        ctx.network.http_hosts = hosts.into_iter().map(str::to_owned).collect();
        async move {
            let e = run(&registry, &ctx, "http.fetch", json!({"url": url})).await;
            assert_eq!(e.error_kind(), Some(expect), "{url}: {e:?}");
            let text = format!("{:?}", e.outcome);
            assert!(text.contains(says), "{url}: {text}");
        }
    };

    // Off by default, whatever the grant says.
    check(
        builtin(),
        vec!["localhost"],
        format!("http://localhost:{port}/"),
        ErrorKind::Unavailable,
        "switched off",
    )
    .await;
    // On, but the mission's grant is empty or names other hosts.
    check(
        enabled(),
        vec![],
        "https://example.com/".into(),
        ErrorKind::Confinement,
        "not an allowlisted host",
    )
    .await;
    check(
        enabled(),
        vec!["example.org", "*.example.com"],
        "https://example.com/".into(),
        ErrorKind::Confinement,
        "not an allowlisted host",
    )
    .await;
    // Allowlisted, but the addresses are not public.
    let disguises = [
        ("localhost", "localhost".to_owned()),
        ("127.0.0.1", "127.0.0.1".to_owned()),
        ("127.1", "127.1".to_owned()),
        ("10.0.0.1", "10.0.0.1".to_owned()),
        ("169.254.169.254", "169.254.169.254".to_owned()),
        ("0.0.0.0", "0.0.0.0".to_owned()),
        ("::1", "[::1]".to_owned()),
        ("::ffff:127.0.0.1", "[::ffff:127.0.0.1]".to_owned()),
        ("::ffff:7f00:1", "[::ffff:7f00:1]".to_owned()),
        ("64:ff9b::7f00:1", "[64:ff9b::7f00:1]".to_owned()),
        ("fd00::1", "[fd00::1]".to_owned()),
        ("2130706433", "2130706433".to_owned()),
    ];
    for (host, in_url) in disguises {
        check(
            enabled(),
            vec![host],
            format!("http://{in_url}:{port}/"),
            ErrorKind::Confinement,
            "refusing",
        )
        .await;
    }

    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "a refused fetch connected to the listener"
    );
}
